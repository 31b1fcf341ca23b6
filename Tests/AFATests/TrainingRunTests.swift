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
        // each line says how the targets of its window divided the pixels, the same after a resume
        let entries = try log.map { try JSONDecoder().decode(TrainLogEntry.self, from: Data($0.utf8)) }
        let fullEntries = try String(contentsOfFile: root + "/full/log.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(TrainLogEntry.self, from: Data($0.utf8)) }
        XCTAssertEqual(entries.map(\.labels), fullEntries.map(\.labels))
        for e in entries {
            let l = try XCTUnwrap(e.labels)
            XCTAssertEqual(l.pseudoBackground + l.pseudoForeground + l.pseudoIgnored, 1, accuracy: 1e-12)
            XCTAssertEqual(l.refinedBackground + l.refinedForeground + l.refinedIgnored, 1, accuracy: 1e-12)
            XCTAssertTrue(l.pseudoBackground > 0 && l.pairsLabelled > 0 && l.pairsLabelled < 1, "\(l)")
        }
        // a second fresh run into the same directory is refused instead of overwriting it
        XCTAssertThrowsError(try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: root + "/full", resume: false))
        // a checkpoint opens for inference
        let seg = try Segmenter(checkpoint: root + "/full/checkpoints/latest.safetensors")
        XCTAssertEqual(seg.classNames, ds.classNames)
    }

    /// The affinity labels follow the token grid of the model and the crop: a crop not divisible by 16
    /// (40: a 3×3 grid, not 40/16 = 2) and finer strides (4, 2, 1, 1: a 6×6 grid at crop 48) train
    /// through the affinity phase instead of failing at its first iteration.
    func testAffinityLabelsFollowTheTokenGrid() throws {
        for (crop, strides) in [(40, [4, 2, 2, 1]), (48, [4, 2, 1, 1])] {
            var (ds, recipe) = try smallRun(images: 4, seed: 9, iterations: 4)
            recipe.cropSize = crop
            recipe.model.strides = strides
            recipe.train.camIters = 0; recipe.train.affLabelIter = 1   // the affinity loss from the second iteration on
            let trainer = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: root + "/grid\(crop)", resume: false)
            try trainer.run()
            XCTAssertEqual(trainer.completed, 4, "crop \(crop), strides \(strides)")
        }
    }

    /// A recipe file with a missing, mistyped or misspelt key is refused with the file and the key named.
    func testRecipeErrorsNameTheKey() throws {
        let recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: 5, iterations: 10)
        let full = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(recipe)) as? [String: Any])
        XCTAssertEqual(try TrainRecipe.decode(json: JSONSerialization.data(withJSONObject: full), source: "r.json"), recipe)
        func message(_ edit: (inout [String: Any]) -> Void) -> String {
            var object = full
            edit(&object)
            do {
                _ = try TrainRecipe.decode(json: JSONSerialization.data(withJSONObject: object), source: "r.json")
                return "decoded"
            } catch { return "\(error)" }
        }
        func edit(_ section: String, _ change: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
            { object in var sub = object[section] as! [String: Any]; change(&sub); object[section] = sub }
        }
        XCTAssertEqual(message { $0.removeValue(forKey: "crop_size") },
                       "invalid input: r.json: the recipe has no 'crop_size' (`afa train --dry-run` prints a complete recipe)")
        XCTAssertEqual(message(edit("train") { $0["lr"] = "fast" }), "invalid input: r.json: 'train.lr' is not a number")
        XCTAssertEqual(message(edit("model") { $0["strides"] = [4, 2, "x", 1] }), "invalid input: r.json: 'model.strides[2]' is not an integer")
        XCTAssertEqual(message(edit("model") { $0["embed_dims"] = NSNull() }), "invalid input: r.json: 'model.embed_dims' is null, expected a list")
        XCTAssertEqual(message(edit("train") { $0["aff_label_sampling"] = "most" }),
                       "invalid input: r.json: 'train.aff_label_sampling': 'most' is not one of nearest, majority")
        XCTAssertThrowsError(try TrainRecipe.decode(json: Data("{\"preset\": ".utf8), source: "r.json")) {
            XCTAssertTrue("\($0)".hasPrefix("invalid input: r.json: not a JSON recipe"), "\($0)")
        }
    }

    func testLabelCountsSplitPixelsAndPairs() {
        let labels = RefinedLabels(refinedPseudoLabel: [0, 0, 1, 2, 255, 255], refinedAffinityLabel: [0, 1, 1, 1, 1, 255],
                                   affinityLabel: [1, 0, 255, 1])
        let c = LabelCounts(labels, ignore: 255)
        XCTAssertEqual(c.counts, [2, 2, 2, 1, 4, 1, 2, 1, 1])
        let s = (c + c).shares
        XCTAssertEqual([s.pseudoBackground, s.pseudoForeground, s.pseudoIgnored], [2.0 / 6, 2.0 / 6, 2.0 / 6])
        XCTAssertEqual([s.refinedBackground, s.refinedForeground, s.refinedIgnored], [1.0 / 6, 4.0 / 6, 1.0 / 6])
        XCTAssertEqual(s.pairsLabelled, 3.0 / 4)
        XCTAssertEqual(s.pairsPositive, 2.0 / 3)
        XCTAssertEqual(LabelCounts().shares.pairsPositive, 0, "no pairs: shares are 0, not NaN")
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

    /// `--resume` when `latest` is damaged, truncated or missing, or older than an `iter_<n>`: the newest
    /// valid checkpoint is used, the notice names it, and `latest` points at it again.
    func testResumeFallsBackToTheNewestValidCheckpoint() throws {
        var (ds, recipe) = try smallRun(images: 6, seed: 3, iterations: 6)
        recipe.checkpointEvery = 2
        let run = root + "/run", dir = run + "/checkpoints"
        try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: run, resume: false).run(stopAfter: 4)
        let fm = FileManager.default
        XCTAssertEqual(Set(try fm.contentsOfDirectory(atPath: dir)), ["iter_2.safetensors", "iter_4.safetensors", "latest.safetensors"])
        let good = try Data(contentsOf: URL(fileURLWithPath: dir + "/iter_4.safetensors"))

        // A flipped bit in latest (a hard link of iter_4, so iter_4 is damaged too): falls back to iter_2.
        var bad = good
        bad[bad.count - 10] ^= 1
        try bad.write(to: URL(fileURLWithPath: dir + "/latest.safetensors"))
        var t = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: run, resume: true)
        XCTAssertEqual(t.completed, 2)
        let notice = try XCTUnwrap(t.resumeNotice)
        XCTAssertTrue(notice.contains("iter_2.safetensors") && notice.contains("checksum") && notice.contains("iter_4"), notice)
        XCTAssertEqual(try Checkpoint.open(dir + "/latest.safetensors").iteration, 2)

        // Truncated latest, intact iter_4 (written again): iter_4.
        // (atomic writes here: latest is now another name of iter_2, which must stay intact)
        try good.write(to: URL(fileURLWithPath: dir + "/iter_4.safetensors"), options: .atomic)
        try good.prefix(good.count / 2).write(to: URL(fileURLWithPath: dir + "/latest.safetensors"), options: .atomic)
        t = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: run, resume: true)
        XCTAssertEqual(t.completed, 4)
        XCTAssertTrue(t.resumeNotice?.contains("iter_4.safetensors") == true, t.resumeNotice ?? "")

        // Latest older than iter_4 (killed between the two writes): iter_4, silently preferred with a notice.
        try fm.removeItem(atPath: dir + "/latest.safetensors")
        try fm.copyItem(atPath: dir + "/iter_2.safetensors", toPath: dir + "/latest.safetensors")
        t = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: run, resume: true)
        XCTAssertEqual(t.completed, 4)
        XCTAssertTrue(t.resumeNotice?.contains("older iteration") == true, t.resumeNotice ?? "")

        // Intact latest: no notice. Leftover temporary files of a killed write are removed.
        XCTAssertTrue(fm.createFile(atPath: dir + "/.iter_6.safetensors.tmp-1-2", contents: Data([1, 2, 3])))
        t = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: run, resume: true)
        XCTAssertNil(t.resumeNotice)
        XCTAssertEqual(t.resumedFrom, dir + "/latest.safetensors")
        XCTAssertFalse(fm.fileExists(atPath: dir + "/.iter_6.safetensors.tmp-1-2"))

        // Nothing readable: the error names the damaged files.
        for f in try fm.contentsOfDirectory(atPath: dir) { try bad.write(to: URL(fileURLWithPath: dir + "/" + f)) }
        XCTAssertThrowsError(try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: run, resume: true)) { e in
            XCTAssertTrue("\(e)".contains("no readable checkpoint") && "\(e)".contains("iter_2.safetensors"), "\(e)")
        }

        // Killed before its first checkpoint: --resume starts over and drops the earlier attempt's log lines.
        let early = root + "/early"
        try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: early, resume: false).run(stopAfter: 1)
        for f in try fm.contentsOfDirectory(atPath: early + "/checkpoints") { try fm.removeItem(atPath: early + "/checkpoints/" + f) }
        t = try Trainer(recipe: recipe, dataset: ds, evalDataset: nil, runDirectory: early, resume: true)
        XCTAssertEqual(t.completed, 0)
        XCTAssertTrue(t.resumeNotice?.contains("starting from iteration 0") == true)
        XCTAssertEqual(try String(contentsOfFile: early + "/log.jsonl", encoding: .utf8), "")
    }
}
