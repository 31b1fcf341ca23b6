import AFA
import Foundation
import XCTest

/// A short run on a tiny generated dataset: checkpoints, logs, and an interrupted run resumed to
/// the same weights, bit for bit, as an uninterrupted one.
final class TrainingRunTests: XCTestCase {
    var root: String!

    override func setUp() { root = NSTemporaryDirectory() + "afa-run-\(UUID().uuidString)" }
    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    /// A generated 48×48 dataset under `root/data` and the tiny recipe at crop 48, batch 2.
    func smallRun(images: Int, seed: UInt64, iterations: Int) throws -> (VOCDataset, TrainRecipe) {
        try SyntheticDataset(trainCount: images, valCount: 0, size: 48, classes: 3, seed: seed).write(to: root + "/data")
        let ds = try VOCDataset(root: root + "/data", split: "train", requireMasks: false)
        var recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: ds.numClasses, iterations: iterations)
        recipe.cropSize = 48
        recipe.batchSize = 2
        return (ds, recipe)
    }

    func testResumeGivesTheSameWeightsAsAnUninterruptedRun() throws {
        var (ds, recipe) = try smallRun(images: 12, seed: 2, iterations: 40)
        recipe.checkpointEvery = 20
        recipe.logEvery = 10

        let full = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: root + "/full", resume: false)
        try full.run()
        let first = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: root + "/split", resume: false)
        try first.run(stopAfter: 20)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/split/checkpoints/iter_20.safetensors"))
        let resumed = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: root + "/split", resume: true)
        XCTAssertEqual(resumed.completed, 20)
        try resumed.run()
        XCTAssertEqual(resumed.completed, 40)
        for (a, b) in zip(full.model.parameters, resumed.model.parameters) {
            XCTAssertEqual(a.value.array, b.value.array, a.name)
        }
        XCTAssertEqual(full.model.decoder.bn.runningMean.value.array, resumed.model.decoder.bn.runningMean.value.array)
        let log = try String(contentsOfFile: root + "/split/log.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(log.count, 4)
        XCTAssertTrue(log.allSatisfy { !$0.contains("nan") })
        // a second fresh run into the same directory is refused instead of overwriting it
        XCTAssertThrowsError(try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: root + "/full", resume: false))
        // a checkpoint opens for inference
        let seg = try Segmenter(checkpoint: root + "/full/checkpoints/latest.safetensors")
        XCTAssertEqual(seg.classNames, ds.classNames)
    }

    func testNonFiniteLossStopsTheRunAndKeepsTheLastCheckpoint() throws {
        var (ds, recipe) = try smallRun(images: 6, seed: 5, iterations: 30)
        recipe.checkpointEvery = 1
        recipe.train.lr = 1e12          // diverges within a few steps
        recipe.train.warmupIters = 0
        let trainer = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: root + "/run", resume: false)
        XCTAssertThrowsError(try trainer.run()) { e in
            guard case AFAError.nonFinite(let m) = e else { return XCTFail("unexpected error \(e)") }
            XCTAssertTrue(m.contains("checkpoint"), m)
        }
        XCTAssertLessThan(trainer.completed, 30)
        let ck = try Checkpoint.open(root + "/run/checkpoints/latest.safetensors")
        XCTAssertEqual(ck.iteration, trainer.completed)
        let model = try AFAModel(config: recipe.model)
        try model.loadStateDict(ck.file, ignorePrefixes: ["optimizer.", "trainer."])
        XCTAssertTrue(model.parameters.allSatisfy { p in p.value.array.allSatisfy { $0.isFinite } })
    }
}
