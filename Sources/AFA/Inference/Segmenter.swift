import Foundation
import ImageIO
import Layers
import SafeTensors
import TensorCore

/// How the segmentation logits of several scales are combined.
public enum ScaleFusion: String, Sendable, Codable, CaseIterable {
    /// Element-wise maximum over the scales, as the authors' multi-scale test script does.
    case max
    /// Sum over the scales (the product's rule before the authors' protocol was adopted).
    case sum
}

/// What to compute for one image.
public struct SegmentationOptions: Sendable, Equatable {
    /// Input scales; the image is resized to ⌊s·H⌋ × ⌊s·W⌋ (at least 16 pixels a side) for each.
    public var scales: [Double]
    /// Average each scale's logits with those of the horizontally mirrored image (flipped back).
    public var flip: Bool
    /// Also return the fused class activation maps (from the same encoder passes).
    public var cams: Bool
    /// How the scales are combined.
    public var fusion: ScaleFusion
    /// Refine the fused probabilities with a dense CRF (labels and probabilities are then the CRF's).
    public var crf: DenseCRF?

    public init(scales: [Double] = [1.0], flip: Bool = true, cams: Bool = false, fusion: ScaleFusion = .max, crf: DenseCRF? = nil) {
        self.scales = scales; self.flip = flip; self.cams = cams; self.fusion = fusion; self.crf = crf
    }

    /// The authors' test protocol: scales 1, 0.5 and 0.75, each averaged with its mirror, fused by an
    /// element-wise maximum, then the dense CRF with their parameters.
    public static let authors = SegmentationOptions(scales: [1.0, 0.5, 0.75], flip: true, fusion: .max, crf: .authors)

    /// The largest accepted scale.
    public static let maxScale = 4.0

    /// Throws `SegmenterError.invalidArgument` unless every scale is finite and in (0, maxScale].
    public func validate() throws {
        guard !scales.isEmpty else { throw SegmenterError.invalidArgument("scales: at least one scale is needed") }
        for s in scales where !(s.isFinite && s > 0 && s <= Self.maxScale) {
            throw SegmenterError.invalidArgument("scales: \(s) is not in (0, \(Self.maxScale)]")
        }
    }
}

/// Limits on what one call accepts.
public struct InferenceLimits: Sendable, Equatable {
    /// Largest pass, in pixels: the image at each requested scale (⌊s·H⌋ × ⌊s·W⌋) must fit. Memory grows
    /// with the square of it: the stage-1 attention holds (P/16)·(P/1024) values per head and image,
    /// twice (logits and probabilities), so a pass of P = 1 MP takes about 0.5 GB per image at stage 1
    /// (1 GB with the mirrored image), whatever the preset.
    public var maxPixels: Int
    public init(maxPixels: Int = 1_048_576) { self.maxPixels = maxPixels }
}

/// Why a segmentation call was refused.
public enum SegmenterError: Error, CustomStringConvertible, LocalizedError, Equatable {
    /// An argument is out of range (scales, tensor rank or channels, image size 0).
    case invalidArgument(String)
    /// The image, at the given scale, has more pixels than the configured limit.
    case imageTooLarge(width: Int, height: Int, scale: Double, maxPixels: Int)
    /// Every slot is busy and the queue is full: try again later.
    case busy(queued: Int)

    public var description: String {
        switch self {
        case let .invalidArgument(m): return "invalid argument: \(m)"
        case let .imageTooLarge(w, h, s, limit):
            return "image of \(w)×\(h) pixels" + (s == 1 ? "" : " at scale \(s)") + " is over the limit of \(limit) pixels per pass"
        case let .busy(q): return "busy: all inference slots are taken and \(q) requests are queued"
        }
    }

    public var errorDescription: String? { description }
}

/// What segmenting one image gives.
public struct Segmentation: Sendable {
    /// Class index per pixel (argmax of the fused segmentation logits).
    public var labels: LabelMap
    /// Softmax probabilities (C, H, W) of the fused logits.
    public var probabilities: Tensor
    /// Multi-label classifier probabilities (C − 1): sigmoid of the class scores at the first scale,
    /// averaged over the image and its mirror.
    public var classProbabilities: [Float]
    /// Class activation maps (C − 1, H, W), fused over the scales and min–max normalised; nil unless requested.
    public var cams: Tensor?
    /// The predicted affinity of the largest scale's pass (image first, then its mirror); nil unless
    /// CAMs were requested.
    public var affinity: Tensor?

    /// Share of the pixels of each class present, by class index.
    public var classShares: [(classIndex: Int, share: Double)] {
        var counts = [Int](repeating: 0, count: probabilities.shape[0])
        for v in labels.values where Int(v) < counts.count { counts[Int(v)] += 1 }
        let total = Double(max(labels.values.count, 1))
        return counts.enumerated().filter { $0.element > 0 }.map { ($0.offset, Double($0.element) / total) }
    }
}

/// A trained model ready to segment images, shareable by any number of callers at once.
///
/// The weights are loaded once and never written; each call makes its own workspace, so concurrent
/// calls do not interact. The synchronous `segment` runs on the calling thread (with the process's
/// worker threads for its parallel parts). The `async` one goes through a bounded queue: at most
/// `maxConcurrent` calls compute at a time, each with an equal share of the worker threads (so
/// concurrent requests never oversubscribe the cores), up to `maxQueued` more wait, and beyond that
/// the call fails at once with `SegmenterError.busy`.
public final class Segmenter: Sendable {
    public let model: AFAModel
    public let recipe: TrainRecipe
    public let classNames: [String]
    public let limits: InferenceLimits
    public let queue: InferenceQueue

    /// Loads a checkpoint written by `afa train` (model weights and the recipe in its metadata).
    public convenience init(checkpoint path: String, limits: InferenceLimits = InferenceLimits(),
                            maxConcurrent: Int? = nil, maxQueued: Int = 64) throws {
        try self.init(loaded: try Checkpoint.open(path), limits: limits, maxConcurrent: maxConcurrent, maxQueued: maxQueued)
    }

    /// Loads a checkpoint from memory (e.g. received over the network); `name` appears in errors.
    public convenience init(checkpointData data: Data, name: String = "checkpoint", limits: InferenceLimits = InferenceLimits(),
                            maxConcurrent: Int? = nil, maxQueued: Int = 64) throws {
        try self.init(loaded: try Checkpoint.open(data: data, name: name), limits: limits, maxConcurrent: maxConcurrent, maxQueued: maxQueued)
    }

    convenience init(loaded ck: Checkpoint, limits: InferenceLimits, maxConcurrent: Int?, maxQueued: Int) throws {
        let model = try AFAModel(config: ck.recipe.model)
        try model.loadStateDict(ck.file, ignorePrefixes: Checkpoint.nonModelPrefixes)
        let names = ck.classNames ?? (0..<ck.recipe.model.numClasses).map { $0 == 0 ? "background" : "class\($0)" }
        self.init(model: model, recipe: ck.recipe, classNames: names, limits: limits, maxConcurrent: maxConcurrent, maxQueued: maxQueued)
    }

    /// Wraps a model in memory. The model is only read; a training loop may go on updating it, and
    /// results then reflect whatever weights it holds at the time.
    public init(model: AFAModel, recipe: TrainRecipe, classNames: [String], limits: InferenceLimits = InferenceLimits(),
                maxConcurrent: Int? = nil, maxQueued: Int = 64) {
        self.model = model; self.recipe = recipe; self.classNames = classNames; self.limits = limits
        queue = InferenceQueue(maxConcurrent: maxConcurrent ?? Parallel.globalWorkers, maxQueued: maxQueued)
    }

    /// Checks an image's size, at every scale of `options`, against the limits before anything is
    /// allocated for it.
    public func checkSize(width: Int, height: Int, options: SegmentationOptions = SegmentationOptions()) throws {
        guard width > 0, height > 0 else { throw SegmenterError.invalidArgument("image of \(width)×\(height) pixels") }
        for s in Set([1.0] + options.scales).sorted() {
            let (sh, sw) = Self.passSize(height: height, width: width, scale: s)
            let (pixels, overflow) = sh.multipliedReportingOverflow(by: sw)
            guard !overflow, pixels <= limits.maxPixels else {
                throw SegmenterError.imageTooLarge(width: width, height: height, scale: s, maxPixels: limits.maxPixels)
            }
        }
    }

    /// The size the network sees at scale `s`: ⌊s·H⌋ × ⌊s·W⌋, at least 16 a side.
    static func passSize(height: Int, width: Int, scale s: Double) -> (Int, Int) {
        (max(16, Int(s * Double(height))), max(16, Int(s * Double(width))))
    }

    /// Segments an RGB image on the calling thread.
    public func segment(_ image: RGBImage, options: SegmentationOptions = SegmentationOptions()) throws -> Segmentation {
        try options.validate()
        try checkSize(width: image.width, height: image.height, options: options)
        return try run(Augmentation.normalized(image), image: image, options: options)
    }

    /// Segments an RGB image through the request queue (see the type's description).
    public func segment(_ image: RGBImage, options: SegmentationOptions = SegmentationOptions()) async throws -> Segmentation {
        try options.validate()
        try checkSize(width: image.width, height: image.height, options: options)
        return try await queue.run { try self.run(Augmentation.normalized(image), image: image, options: options) }
    }

    /// The same for a normalised (1, 3, H, W) tensor, on the calling thread. A dense CRF, when asked
    /// for, sees the image recovered from the tensor (the normalisation undone and rounded).
    public func segment(normalized x: Tensor, options: SegmentationOptions = SegmentationOptions()) throws -> Segmentation {
        try options.validate()
        guard x.rank == 4, x.shape[0] == 1, x.shape[1] == 3 else {
            throw SegmenterError.invalidArgument("normalised image of shape \(x.shape), expected (1, 3, H, W)")
        }
        try checkSize(width: x.shape[3], height: x.shape[2], options: options)
        return try run(x, image: options.crf == nil ? nil : Augmentation.denormalized(x), options: options)
    }

    /// One image, already checked: per scale the network runs once on the image (and its mirror) and
    /// gives both the segmentation logits and, from the same stage-4 features, the CAMs.
    func run(_ x: Tensor, image: RGBImage?, options: SegmentationOptions) throws -> Segmentation {
        let ws = Workspace.inference()
        let (h, w) = (x.shape[2], x.shape[3])
        let c = model.config.numClasses, k = c - 1
        let plane = h * w
        let fused = Tensor(zeros: [c, h, w])
        var clsProb = [Float](repeating: 0, count: k)
        let camFusion = options.cams ? CAMFusion(batch: 1, classes: k, height: h, width: w) : nil
        var affinity: Tensor?
        let largest = options.scales.indices.max { options.scales[$0] < options.scales[$1] }!
        for (si, s) in options.scales.enumerated() {
            let (sh, sw) = Self.passSize(height: h, width: w, scale: s)
            let xs = sh == h && sw == w ? x : try ImageOps.resize(x, height: sh, width: sw)
            let batch = options.flip ? ImageOps.withFlips(xs) : xs
            // The affinity head runs only when the CAMs (and with them the affinity) are asked for.
            let seg: Tensor, cls: Tensor, stage4: Tensor, pred: Tensor?
            if options.cams {
                let out = try model.forward(batch, ws)
                (seg, cls, stage4, pred) = (out.seg, out.cls, out.stages[3], out.attnPred)
            } else {
                (seg, cls, stage4) = try model.segmentationForward(batch, ws)
                pred = nil
            }
            // This scale's logits: the image's averaged with its mirror's flipped back.
            let up = try ImageOps.resize(seg, height: h, width: w)
            let scaleLogits = si == 0 ? fused : Tensor(zeros: [c, h, w])
            for ch in 0..<c {
                let dst = scaleLogits.data + ch * plane
                dst.update(from: up.data + ch * plane, count: plane)
                if options.flip {
                    let f = up.data + (c + ch) * plane
                    for y in 0..<h { for xx in 0..<w { dst[y * w + xx] = (dst[y * w + xx] + f[y * w + (w - 1 - xx)]) / 2 } }
                }
            }
            if si > 0 {
                switch options.fusion {
                case .max: Kernels.maximum(fused.data, scaleLogits.data, fused.data, fused.count)
                case .sum: Kernels.add(fused.data, scaleLogits.data, fused.data, fused.count)
                }
            } else {
                let passes = batch.shape[0]
                for i in 0..<passes { for j in 0..<k { clsProb[j] += 1 / (1 + Foundation.exp(-cls.data[i * k + j])) } }
                for j in 0..<k { clsProb[j] /= Float(passes) }
            }
            if let camFusion {
                try camFusion.add(raw: try model.classActivationMap(stage4), flipped: options.flip)
                if si == largest { affinity = pred }
            }
        }
        // softmax over classes and argmax
        let probs = Tensor(zeros: [c, h, w])
        var labels = [UInt8](repeating: 0, count: plane)
        for p in 0..<plane {
            var m = -Float.infinity, best = 0
            for ch in 0..<c where fused.data[ch * plane + p] > m { m = fused.data[ch * plane + p]; best = ch }
            var z: Float = 0
            for ch in 0..<c { let e = Foundation.exp(fused.data[ch * plane + p] - m); probs.data[ch * plane + p] = e; z += e }
            for ch in 0..<c { probs.data[ch * plane + p] /= z }
            labels[p] = UInt8(best)
        }
        if let crf = options.crf, let image {
            let q = try crf.marginals(image: image, probabilities: probs)
            return Segmentation(labels: DenseCRF.argmaxLabels(q), probabilities: q, classProbabilities: clsProb,
                                cams: try camFusion.map { try $0.normalized().reshaped([k, h, w]) }, affinity: affinity)
        }
        return Segmentation(labels: LabelMap(width: w, height: h, values: labels), probabilities: probs,
                            classProbabilities: clsProb, cams: try camFusion.map { try $0.normalized().reshaped([k, h, w]) },
                            affinity: affinity)
    }
}

/// A bounded queue of compute jobs: at most `maxConcurrent` run at once (each limited to its share of
/// the worker threads), at most `maxQueued` wait in order of arrival, more are refused with
/// `SegmenterError.busy`. The jobs run on Dispatch's global threads, not on Swift's cooperative pool,
/// which they would otherwise block.
public final class InferenceQueue: @unchecked Sendable {
    public let maxConcurrent: Int
    public let maxQueued: Int
    /// Worker threads each running job may use.
    public let workersPerJob: Int
    private let lock = NSLock()
    private var running = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private var head = 0

    public init(maxConcurrent: Int, maxQueued: Int) {
        self.maxConcurrent = max(1, maxConcurrent)
        self.maxQueued = max(0, maxQueued)
        workersPerJob = max(1, Parallel.globalWorkers / self.maxConcurrent)
    }

    /// Jobs computing now.
    public var inFlight: Int { lock.lock(); defer { lock.unlock() }; return running }
    /// Jobs waiting for a slot.
    public var queued: Int { lock.lock(); defer { lock.unlock() }; return waiting.count - head }

    /// Runs `job` when a slot is free; throws `SegmenterError.busy` at once when the queue is full.
    public func run<T: Sendable>(_ job: @escaping @Sendable () throws -> T) async throws -> T {
        try await acquire()
        defer { release() }
        let workers = workersPerJob
        return try await withCheckedThrowingContinuation { (done: CheckedContinuation<T, Error>) in
            DispatchQueue.global(qos: .userInitiated).async {
                done.resume(with: Result { try Parallel.withWorkers(workers) { try job() } })
            }
        }
    }

    private func acquire() async throws {
        if try admitNow() { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            if !enqueueUnlessFree(c) { c.resume() }
        }
    }

    /// Takes a free slot (true), or says the caller must wait (false), or throws when the queue is full.
    private func admitNow() throws -> Bool {
        lock.lock(); defer { lock.unlock() }
        if running < maxConcurrent { running += 1; return true }
        let depth = waiting.count - head
        if depth >= maxQueued { throw SegmenterError.busy(queued: depth) }
        return false
    }

    /// Queues `c` for the next released slot (true), or takes a slot freed meanwhile (false).
    private func enqueueUnlessFree(_ c: CheckedContinuation<Void, Never>) -> Bool {
        lock.lock(); defer { lock.unlock() }
        if running < maxConcurrent { running += 1; return false }
        waiting.append(c)   // `release` hands its slot over (running stays counted)
        return true
    }

    private func release() {
        lock.lock()
        if head < waiting.count {
            let next = waiting[head]
            head += 1
            if head > 64 && head * 2 > waiting.count { waiting.removeFirst(head); head = 0 }
            lock.unlock()
            next.resume()
        } else {
            running -= 1
            lock.unlock()
        }
    }
}

/// Pictures people can look at.
public enum Visualization {
    /// The image blended with the VOC colours of the labels (background and ignore left as they are).
    public static func overlay(_ image: RGBImage, labels: LabelMap, alpha: Float = 0.55) -> RGBImage {
        var out = image
        for p in 0..<(image.width * image.height) {
            let l = Int(labels.values[p])
            guard l != 0 && l != 255 else { continue }
            let (r, g, b) = VOCPalette.color(l)
            for (c, v) in [r, g, b].enumerated() {
                out.pixels[3 * p + c] = UInt8(min(255, (1 - alpha) * Float(image.pixels[3 * p + c]) + alpha * Float(v)))
            }
        }
        return out
    }

    /// A heat map (blue → red) of a [0, 1] map blended over the image.
    public static func heatmap(_ image: RGBImage, map: UnsafePointer<Float>, alpha: Float = 0.5) -> RGBImage {
        var out = image
        for p in 0..<(image.width * image.height) {
            let v = min(max(map[p], 0), 1)
            let col: [Float] = [255 * min(1, 2 * v), 255 * (1 - abs(2 * v - 1)), 255 * min(1, 2 * (1 - v))]
            for c in 0..<3 { out.pixels[3 * p + c] = UInt8(min(255, (1 - alpha) * Float(image.pixels[3 * p + c]) + alpha * col[c])) }
        }
        return out
    }
}
