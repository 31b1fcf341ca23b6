import AFA
import Dispatch
import Foundation
import XCTest

/// One model shared by many callers: results equal to sequential calls, bit for bit; training in the
/// same process untouched; the bounded queue and the argument checks.
final class ConcurrencyTests: XCTestCase {
    static func tinyModel(seed: UInt64, classes: Int = 4) throws -> (AFAModel, TrainRecipe) {
        let recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: classes, iterations: 10)
        let model = try AFAModel(config: recipe.model)
        model.initialize(seed: seed, linearStd: 0.2)
        return (model, recipe)
    }

    /// Four pictures of different sizes with some structure (gradients and a bright block).
    static func images() -> [RGBImage] {
        [(48, 64), (64, 64), (40, 56), (72, 48)].enumerated().map { n, size in
            let (w, h) = size
            var px = [UInt8](repeating: 0, count: w * h * 3)
            for y in 0..<h {
                for x in 0..<w {
                    let inside = x > w / 4 && x < w / 2 + n * 4 && y > h / 3 && y < 2 * h / 3
                    px[(y * w + x) * 3] = UInt8((x * 255) / w)
                    px[(y * w + x) * 3 + 1] = inside ? 240 : UInt8((y * 200) / h)
                    px[(y * w + x) * 3 + 2] = UInt8((n * 60 + x + y) % 256)
                }
            }
            return RGBImage(width: w, height: h, pixels: px)
        }
    }

    func assertSame(_ a: Segmentation, _ b: Segmentation, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.labels, b.labels, what, file: file, line: line)
        XCTAssertEqual(a.probabilities.array, b.probabilities.array, what, file: file, line: line)
        XCTAssertEqual(a.classProbabilities, b.classProbabilities, what, file: file, line: line)
        XCTAssertEqual(a.cams?.array, b.cams?.array, what, file: file, line: line)
    }

    func testSixteenConcurrentTasksMatchSequentialCallsBitForBit() async throws {
        let (model, recipe) = try Self.tinyModel(seed: 1)
        let segmenter = Segmenter(model: model, recipe: recipe, classNames: ["bg", "a", "b", "c"], maxConcurrent: 4, maxQueued: 64)
        let options = SegmentationOptions(scales: [1.0, 0.75], flip: true, cams: true)
        let images = Self.images()
        // The reference: one call after another, through the same queue (same share of the workers).
        var expected: [Segmentation] = []
        for img in images { expected.append(try await segmenter.segment(img, options: options)) }
        XCTAssertTrue(expected.contains { Set($0.labels.values).count > 1 }, "the test images should not give a uniform map")

        let results = try await withThrowingTaskGroup(of: (Int, Int, Segmentation).self) { group in
            for task in 0..<16 {
                for (i, img) in images.enumerated() {
                    group.addTask { (task, i, try await segmenter.segment(img, options: options)) }
                }
            }
            var all: [(Int, Int, Segmentation)] = []
            for try await r in group { all.append(r) }
            return all
        }
        XCTAssertEqual(results.count, 64)
        for (task, i, r) in results { assertSame(r, expected[i], "task \(task) image \(i)") }
        XCTAssertEqual(segmenter.queue.inFlight, 0)
        XCTAssertEqual(segmenter.queue.queued, 0)
    }

    func testSynchronousCallsFromManyThreadsMatchSequentialCalls() throws {
        let (model, recipe) = try Self.tinyModel(seed: 2)
        let segmenter = Segmenter(model: model, recipe: recipe, classNames: ["bg", "a", "b", "c"])
        let images = Self.images()
        let options = SegmentationOptions(scales: [1.0], flip: true, cams: true)
        // Each thread runs single-worker, as does the reference, so every product is split alike.
        let expected = try Parallel.withWorkers(1) { try images.map { try segmenter.segment($0, options: options) } }
        let lock = NSLock()
        var results: [(Int, Segmentation)] = []
        var failures: [Error] = []
        DispatchQueue.concurrentPerform(iterations: 32) { n in
            do {
                let r = try Parallel.withWorkers(1) { try segmenter.segment(images[n % 4], options: options) }
                lock.lock(); results.append((n % 4, r)); lock.unlock()
            } catch {
                lock.lock(); failures.append(error); lock.unlock()
            }
        }
        XCTAssertTrue(failures.isEmpty, "\(failures)")
        XCTAssertEqual(results.count, 32)
        for (i, r) in results { assertSame(r, expected[i], "image \(i)") }
    }

    /// Two training steps give the same weights whether or not inference runs beside them.
    func testTrainingStepIsUnaffectedByConcurrentInference() throws {
        func trainTwoSteps(withInference: Bool) throws -> [[Float]] {
            var (model, recipe) = try Self.tinyModel(seed: 3)
            recipe.train.camIters = 0
            let step = TrainingStep(model: model, optimizer: PolyWarmupAdamW(model: model, config: recipe.train),
                                    config: recipe.train, rng: RNG(seed: 9))
            var rng = RNG(seed: 4)
            let images = Tensor(zeros: [2, 3, 48, 48]); images.fillUniform(-1.5, 1.5, rng: &rng)
            let cls = try Tensor(shape: [2, 3], values: [1, 0, 1, 0, 1, 0])
            let batch = TrainingBatch(images: images, clsLabel: cls, boxes: [.full(height: 48, width: 48), .full(height: 48, width: 48)])

            let stop = ManagedFlag()
            let group = DispatchGroup()
            if withInference {
                let (other, otherRecipe) = try Self.tinyModel(seed: 5)
                let server = Segmenter(model: other, recipe: otherRecipe, classNames: ["bg", "a", "b", "c"])
                let imgs = Self.images()
                for t in 0..<3 {
                    DispatchQueue.global().async(group: group) {
                        var n = t
                        while !stop.isSet {
                            _ = try? server.segment(imgs[n % 4], options: SegmentationOptions(scales: [1, 1.25], cams: true))
                            n += 1
                        }
                    }
                }
            }
            for it in 1...2 { try step.run(batch, nIter: it) }
            stop.set()
            group.wait()
            return model.parameters.map(\.value.array)
        }
        let alone = try trainTwoSteps(withInference: false)
        let beside = try trainTwoSteps(withInference: true)
        XCTAssertEqual(alone.count, beside.count)
        for (i, (a, b)) in zip(alone, beside).enumerated() { XCTAssertEqual(a, b, "parameter \(i)") }
    }

    func testCAMsComeFromTheSegmentationPassesAndMatchTheMultiScaleCAM() throws {
        let (model, recipe) = try Self.tinyModel(seed: 6)
        let segmenter = Segmenter(model: model, recipe: recipe, classNames: ["bg", "a", "b", "c"])
        let img = Self.images()[1]   // 64×64: ⌊s·64⌋ ≥ 16 at both scales, so the sizes agree
        let r = try segmenter.segment(img, options: SegmentationOptions(scales: [1.0, 1.5], flip: true, cams: true))
        let cam = try model.multiScaleCAM(Augmentation.normalized(img), scales: [1.0, 1.5], Workspace.inference())
        XCTAssertEqual(r.cams?.array, cam.cams.array)
        XCTAssertEqual(r.affinity?.array, cam.affinity.array)
    }

    func testScaleFusionRules() throws {
        let (model, recipe) = try Self.tinyModel(seed: 7)
        let segmenter = Segmenter(model: model, recipe: recipe, classNames: ["bg", "a", "b", "c"])
        let img = Self.images()[0]
        let one = try segmenter.segment(img, options: SegmentationOptions(scales: [1.0], fusion: .max))
        let oneSum = try segmenter.segment(img, options: SegmentationOptions(scales: [1.0], fusion: .sum))
        assertSame(one, oneSum, "a single scale does not depend on the rule")
        let a = try segmenter.segment(img, options: SegmentationOptions(scales: [1.0, 0.5], fusion: .max))
        let b = try segmenter.segment(img, options: SegmentationOptions(scales: [1.0, 0.5], fusion: .sum))
        XCTAssertNotEqual(a.probabilities.array, b.probabilities.array)
    }

    func limitedSegmenter() throws -> Segmenter {
        let (model, recipe) = try Self.tinyModel(seed: 8)
        return Segmenter(model: model, recipe: recipe, classNames: ["bg", "a", "b", "c"], limits: InferenceLimits(maxPixels: 50 * 50))
    }

    func testArgumentsAreChecked() throws {
        let segmenter = try limitedSegmenter()
        let img = Self.images()[2]   // 40×56 = 2240 pixels
        for scales in [[], [0.0], [-1.0], [Double.nan], [1.0, 9.0]] {
            XCTAssertThrowsError(try segmenter.segment(img, options: SegmentationOptions(scales: scales, cams: true))) { e in
                guard case SegmenterError.invalidArgument(let m) = e else { return XCTFail("\(scales): \(e)") }
                XCTAssertTrue(m.contains("scale"), m)
            }
        }
        XCTAssertThrowsError(try segmenter.segment(normalized: Tensor(zeros: [3, 40, 56]))) { e in
            XCTAssertTrue("\(e)".contains("(1, 3, H, W)"), "\(e)")
        }
        XCTAssertThrowsError(try segmenter.segment(normalized: Tensor(zeros: [1, 4, 40, 56])))
        XCTAssertThrowsError(try segmenter.segment(RGBImage(width: 0, height: 0, pixels: [])))
        XCTAssertThrowsError(try Segmenter(checkpointData: Data("not a checkpoint".utf8), name: "upload"))
        XCTAssertNoThrow(try segmenter.segment(img))
    }

    func testImageOverThePixelLimitIsRefusedBeforeQueueing() async throws {
        let segmenter = try limitedSegmenter()
        let big = RGBImage(width: 60, height: 50, pixels: [UInt8](repeating: 9, count: 60 * 50 * 3))
        do {
            _ = try await segmenter.segment(big)
            XCTFail("an image over the pixel limit was accepted")
        } catch SegmenterError.imageTooLarge(let w, let h, let scale, let limit) {
            XCTAssertEqual([w, h, limit], [60, 50, 2500])
            XCTAssertEqual(scale, 1)
        }
        XCTAssertTrue("\(SegmenterError.imageTooLarge(width: 60, height: 50, scale: 1, maxPixels: 2500))".contains("2500"))
        // The limit holds for every pass: 40×56 = 2240 pixels fits at scale 1, not at 1.25 (50×70 = 3500).
        let img = Self.images()[2]
        _ = try await segmenter.segment(img, options: SegmentationOptions(scales: [1, 0.5]))
        do {
            _ = try await segmenter.segment(img, options: SegmentationOptions(scales: [1, 1.25]))
            XCTFail("a pass over the pixel limit was accepted")
        } catch SegmenterError.imageTooLarge(_, _, let scale, _) {
            XCTAssertEqual(scale, 1.25)
        }
    }

    func testCheckpointDataLoadsTheSameModelAsTheFile() throws {
        let (model, recipe) = try Self.tinyModel(seed: 10)
        let data = try Checkpoint.encode(model: model, optimizer: PolyWarmupAdamW(model: model, config: recipe.train),
                                         streams: [RNG(seed: 0)], recipe: recipe, classNames: ["bg", "a", "b", "c"], iteration: 0)
        let path = NSTemporaryDirectory() + "afa-ck-\(UUID().uuidString).safetensors"
        try data.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try Segmenter(checkpoint: path), fromData = try Segmenter(checkpointData: data)
        XCTAssertEqual(fromData.classNames, ["bg", "a", "b", "c"])
        let img = Self.images()[3]
        assertSame(try fromFile.segment(img), try fromData.segment(img), "file vs data")
    }

    func testFullQueueIsRefusedAtOnce() async throws {
        let queue = InferenceQueue(maxConcurrent: 1, maxQueued: 1)
        let gate = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        async let first: Int = queue.run { started.signal(); gate.wait(); return 1 }
        started.wait()   // the first job holds the only slot
        async let second: Int = queue.run { 2 }
        // Wait until the second is queued, then a third has nowhere to go.
        while queue.queued < 1 { try await Task.sleep(nanoseconds: 1_000_000) }
        XCTAssertEqual(queue.inFlight, 1)
        do {
            _ = try await queue.run { 3 }
            XCTFail("a job was accepted beyond the queue's capacity")
        } catch SegmenterError.busy(let queued) {
            XCTAssertEqual(queued, 1)
        }
        gate.signal()
        let (a, b) = try await (first, second)
        XCTAssertEqual([a, b], [1, 2])
        XCTAssertEqual(queue.inFlight, 0)
        XCTAssertEqual(queue.queued, 0)
    }

    func testModuleReflectionFindsParametersInStateDictOrder() throws {
        let attn = EfficientAttention(name: "a", dim: 8, heads: 2, srRatio: 2, normEps: 1e-5)
        XCTAssertEqual(attn.parameters.map(\.name), ["a.q.weight", "a.q.bias", "a.kv.weight", "a.kv.bias", "a.sr.weight",
                                                     "a.sr.bias", "a.norm.weight", "a.norm.bias", "a.proj.weight", "a.proj.bias"])
        let (model, _) = try Self.tinyModel(seed: 0)
        let names = model.parameters.map(\.name)
        XCTAssertEqual(Set(names).count, names.count, "each parameter once")
        XCTAssertEqual(names.first, "encoder.patch_embed1.proj.weight")
        XCTAssertEqual(names.last, "classifier.weight")
        XCTAssertEqual(model.buffers.map(\.name), ["decoder.linear_fuse.bn.running_mean", "decoder.linear_fuse.bn.running_var"])
        XCTAssertEqual(model.counters.map(\.name), ["decoder.linear_fuse.bn.num_batches_tracked"])
        let i1 = names.firstIndex(of: "encoder.norm1.weight")!, i2 = names.firstIndex(of: "encoder.patch_embed2.proj.weight")!
        XCTAssertLessThan(i1, i2)
    }
}

/// A flag set by one thread and read by others.
final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
