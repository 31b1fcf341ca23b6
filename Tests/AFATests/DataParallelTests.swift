import AFA
import Foundation
import Layers
import TensorCore
import XCTest

/// Data-parallel shards in one process: the loader's shards make the global batch, and a step over
/// N shards gives the optimiser the mean of the shards' own gradients (what N ranks allreduce).
/// The Open MPI path itself is checked end to end by Tests/Distributed/test_mpi.py (`make mpi-test`).
final class DataParallelTests: XCTestCase {
    var root: String!

    override func setUp() { root = NSTemporaryDirectory() + "afa-dp-\(UUID().uuidString)" }
    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    func setting(batch: Int = 4) throws -> (VOCDataset, TrainRecipe) {
        try SyntheticDataset(trainCount: 10, valCount: 0, size: 48, classes: 3, seed: 6).write(to: root)
        let ds = try VOCDataset(root: root, split: "train", requireMasks: false)
        var recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: ds.numClasses, iterations: 2000)
        recipe.cropSize = 48
        recipe.batchSize = batch
        return (ds, recipe)
    }

    func loader(_ ds: VOCDataset, _ r: TrainRecipe, shard: (Int, Int)) -> BatchLoader {
        BatchLoader(dataset: ds, augmentation: Augmentation(cropSize: r.cropSize, scaleRange: r.scaleRange), batchSize: r.batchSize,
                    seed: 3, startIteration: 1, shard: shard)
    }

    func testTheLoadersShardsMakeTheGlobalBatch() throws {
        let (ds, recipe) = try setting()
        let whole = try loader(ds, recipe, shard: (0, 1)).make(iteration: 7)
        for s in 0..<2 {
            let part = try loader(ds, recipe, shard: (s, 2)).make(iteration: 7)
            let expected = whole.shard(s, size: 2)
            XCTAssertEqual(part.images.shape, [2, 3, 48, 48])
            XCTAssertEqual(part.images.array, expected.images.array, "shard \(s) images")
            XCTAssertEqual(part.clsLabel.array, expected.clsLabel.array, "shard \(s) labels")
            XCTAssertEqual(part.boxes, expected.boxes)
        }
    }

    func makeStep(_ recipe: TrainRecipe, parallel: DataParallel) throws -> TrainingStep {
        let model = try AFAModel(config: recipe.model)
        model.initialize(seed: 9)
        let opt = PolyWarmupAdamW(model: model, config: recipe.train, globalStep: 0, trainNorms: recipe.trainNorms)
        return TrainingStep(model: model, optimizer: opt, config: recipe.train, rng: DataParallel.stream(seed: 9, shard: 0), parallel: parallel,
                            streams: parallel.localShards.map { DataParallel.stream(seed: 9, shard: $0) })
    }

    func testTwoShardsGiveTheMeanOfEachShardsGradient() throws {
        let (ds, recipe) = try setting()
        let batch = try loader(ds, recipe, shard: (0, 1)).make(iteration: 3)
        let n = recipe.train.affLabelIter + 1   // every loss term active
        let sharded = try makeStep(recipe, parallel: try DataParallel(shards: 2))
        let r = try sharded.run(batch, nIter: n, step: false)
        var mean = [Float](repeating: 0, count: sharded.gradients.flat.count)
        var loss = 0.0
        for s in 0..<2 {
            let single = try makeStep(recipe, parallel: .single)
            single.streams = [DataParallel.stream(seed: 9, shard: s)]
            loss += try single.run(batch.shard(s, size: 2), nIter: n, step: false).losses.total / 2
            let g = single.gradients.flat.array
            for i in mean.indices { mean[i] += g[i] }
        }
        for i in mean.indices { mean[i] *= 0.5 }
        XCTAssertGreaterThan(mean.map(abs).max() ?? 0, 0)
        XCTAssertEqual(sharded.gradients.flat.array, mean)
        XCTAssertEqual(r.losses.total, loss, accuracy: 1e-12)
        // teacher forcing gives labels for one shard: refused when the process computes two
        XCTAssertThrowsError(try sharded.run(batch, nIter: n, labels: try sharded.labels(for: batch), step: false))
    }

    func testAGlobalBatchThatDoesNotDivideIsRefused() throws {
        XCTAssertThrowsError(try DataParallel(shards: 3).shardSize(batchSize: 4)) { e in
            XCTAssertTrue("\(e)".contains("must divide by the number of ranks (3)"), "\(e)")
        }
        XCTAssertThrowsError(try DataParallel(shards: 2, communicator: FakeRanks(rank: 0, size: 3, checksums: nil)))
    }

    func testRanksWithDifferentWeightsStopTheRun() throws {
        let (_, recipe) = try setting()
        let model = try AFAModel(config: recipe.model)
        model.initialize(seed: 1)
        let mine = DataParallel.checksum(model.parameters)
        let agree = try DataParallel(shards: 2, communicator: FakeRanks(rank: 0, size: 2, checksums: [mine, mine]))
        XCTAssertEqual(try agree.verifyIdenticalWeights(model.parameters, iteration: 50), mine)
        let differ = try DataParallel(shards: 2, communicator: FakeRanks(rank: 0, size: 2, checksums: [mine, mine ^ 1]))
        XCTAssertThrowsError(try differ.verifyIdenticalWeights(model.parameters, iteration: 50)) { e in
            XCTAssertTrue("\(e)".contains("after iteration 50 the weights of rank(s) 1 differ"), "\(e)")
        }
        // one changed bit changes the checksum
        model.parameters[3].value.data[0] = model.parameters[3].value.data[0].nextUp
        XCTAssertNotEqual(DataParallel.checksum(model.parameters), mine)
    }
}

/// A communicator whose allgather answers with given values (other collectives are not used here).
final class FakeRanks: Communicator {
    let rank: Int, size: Int
    let checksums: [UInt64]?
    init(rank: Int, size: Int, checksums: [UInt64]?) { self.rank = rank; self.size = size; self.checksums = checksums }
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) throws {}
    func allgather(_ values: [UInt64]) throws -> [UInt64] { checksums ?? values }
    func broadcast(_ data: Data) throws -> Data { data }
}
