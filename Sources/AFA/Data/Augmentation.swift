import Foundation
import ImageIO
import TensorCore

/// The method's training augmentation: random rescale (Pillow's bilinear), horizontal flip, random crop with
/// zero padding (and the crop's valid box), ImageNet normalisation.
public struct Augmentation: Sendable, Codable, Equatable {
    public var cropSize: Int
    public var scaleRange: [Double] = [0.5, 2.0]
    public var flip = true

    public init(cropSize: Int, scaleRange: [Double] = [0.5, 2.0], flip: Bool = true) {
        self.cropSize = cropSize; self.scaleRange = scaleRange; self.flip = flip
    }

    /// One augmented sample: normalised CHW floats (3·crop·crop) written to `out`, and the box of the
    /// crop that holds image pixels (the rest is padding with pixel value 0).
    public func apply(_ image: RGBImage, rng: inout RNG, into out: UnsafeMutablePointer<Float>) -> ImageBox {
        var img = image
        let s = scaleRange[0] + (scaleRange[1] - scaleRange[0]) * Double(rng.uniform())
        // the new side is int(ratio · side), truncated, as in the method's pipeline
        let nh = max(1, Int(Double(img.height) * s)), nw = max(1, Int(Double(img.width) * s))
        img = Self.resize(img, width: nw, height: nh)
        if flip && rng.uniform() < 0.5 { img = Self.flipped(img) }
        let c = cropSize
        // place the image in a padded canvas at least crop-sized, then choose the crop window
        let ph = max(c, img.height), pw = max(c, img.width)
        let oy = rng.int(below: ph - img.height + 1), ox = rng.int(below: pw - img.width + 1)
        let cy = rng.int(below: ph - c + 1), cx = rng.int(below: pw - c + 1)
        let box = ImageBox(h0: max(oy - cy, 0), h1: min(oy + img.height - cy, c), w0: max(ox - cx, 0), w1: min(ox + img.width - cx, c))
        Self.normalize(img, into: out, size: c, offsetY: oy - cy, offsetX: ox - cx)
        return box
    }

    /// Writes the normalised image, placed at (offsetY, offsetX) in a size×size canvas padded with pixel 0.
    static func normalize(_ img: RGBImage, into out: UnsafeMutablePointer<Float>, size: Int, offsetY: Int, offsetX: Int) {
        let plane = size * size
        for ch in 0..<3 {
            let pad = (0 - ImageOps.mean[ch]) / ImageOps.std[ch]
            for y in 0..<size {
                let sy = y - offsetY
                for x in 0..<size {
                    let sx = x - offsetX
                    let v: Float
                    if sy >= 0 && sy < img.height && sx >= 0 && sx < img.width {
                        v = (Float(img.pixels[(sy * img.width + sx) * 3 + ch]) - ImageOps.mean[ch]) / ImageOps.std[ch]
                    } else { v = pad }
                    out[ch * plane + y * size + x] = v
                }
            }
        }
    }

    /// Normalised CHW floats of the whole image (evaluation and inference).
    public static func normalized(_ img: RGBImage) -> Tensor {
        let t = Tensor(zeros: [1, 3, img.height, img.width])
        let plane = img.height * img.width
        for ch in 0..<3 {
            for p in 0..<plane { t.data[ch * plane + p] = (Float(img.pixels[p * 3 + ch]) - ImageOps.mean[ch]) / ImageOps.std[ch] }
        }
        return t
    }

    /// The picture a normalised (1, 3, H, W) tensor came from: the normalisation undone, rounded and
    /// clamped to 0–255 (exact for a tensor made by `normalized`).
    public static func denormalized(_ x: Tensor) -> RGBImage {
        let (h, w) = (x.shape[2], x.shape[3]), plane = h * w
        var img = RGBImage(width: w, height: h)
        for ch in 0..<3 {
            for p in 0..<plane {
                let v = (x.data[ch * plane + p] * ImageOps.std[ch] + ImageOps.mean[ch]).rounded()
                img.pixels[p * 3 + ch] = UInt8(clamping: Int(v.isFinite ? v : 0))
            }
        }
        return img
    }

    /// Bilinear resize of an 8-bit picture as the method's data pipeline does it (Pillow's `BILINEAR`):
    /// a triangle filter whose support widens by the reduction factor, so a downscale averages every
    /// source pixel under an output pixel instead of sampling two and aliasing; an upscale is plain
    /// bilinear with half-pixel centres. Pillow's arithmetic is kept (22-bit fixed-point weights,
    /// horizontal pass first, rounded to 8 bits in between), so the pixels are Pillow's own.
    public static func resize(_ img: RGBImage, width: Int, height: Int) -> RGBImage {
        if width == img.width && height == img.height { return img }
        let across = BilinearTaps(from: img.width, to: width), down = BilinearTaps(from: img.height, to: height)
        var wide = img
        if width != img.width {
            wide = RGBImage(width: width, height: img.height)
            for y in 0..<img.height {
                for x in 0..<width {
                    let (start, taps) = across.window(x)
                    for c in 0..<3 {
                        var acc = BilinearTaps.half
                        for (t, w) in taps.enumerated() { acc += Int32(img.pixels[(y * img.width + start + t) * 3 + c]) * w }
                        wide.pixels[(y * width + x) * 3 + c] = BilinearTaps.clip8(acc)
                    }
                }
            }
        }
        if height == img.height { return wide }
        var out = RGBImage(width: width, height: height)
        for y in 0..<height {
            let (start, taps) = down.window(y)
            for x in 0..<width {
                for c in 0..<3 {
                    var acc = BilinearTaps.half
                    for (t, w) in taps.enumerated() { acc += Int32(wide.pixels[((start + t) * width + x) * 3 + c]) * w }
                    out.pixels[(y * width + x) * 3 + c] = BilinearTaps.clip8(acc)
                }
            }
        }
        return out
    }

    public static func flipped(_ img: RGBImage) -> RGBImage {
        var out = img
        for y in 0..<img.height {
            for x in 0..<img.width {
                for c in 0..<3 { out.pixels[(y * img.width + x) * 3 + c] = img.pixels[(y * img.width + img.width - 1 - x) * 3 + c] }
            }
        }
        return out
    }
}

/// Produces training batches ahead of the training step on a background thread. The batch of
/// iteration n depends only on (seed, n): image order is a seeded shuffle per epoch and each
/// sample's augmentation has its own seeded generator, so a resumed run sees the same data.
public final class BatchLoader: @unchecked Sendable {
    public let dataset: VOCDataset
    public let augmentation: Augmentation
    public let batchSize: Int
    public let seed: UInt64
    private let lock = NSCondition()
    private var ready: [Int: Result<TrainingBatch, Error>] = [:]
    private var nextToProduce: Int
    private var stopped = false
    private let lookahead = 2

    /// The part of each global batch this loader makes: images `index·b ..< (index+1)·b` with
    /// b = batchSize / count (a data-parallel rank's shard); each image is the one a single loader
    /// would put there, augmented identically.
    public let shard: (index: Int, count: Int)

    public init(dataset: VOCDataset, augmentation: Augmentation, batchSize: Int, seed: UInt64, startIteration: Int,
                shard: (index: Int, count: Int) = (0, 1)) {
        precondition(shard.count >= 1 && (0..<shard.count).contains(shard.index) && batchSize % shard.count == 0, "bad batch shard")
        self.dataset = dataset; self.augmentation = augmentation; self.batchSize = batchSize; self.seed = seed; self.shard = shard
        nextToProduce = startIteration
        let t = Thread { [weak self] in self?.produce() }
        t.name = "afa-loader"
        t.start()
    }

    deinit { stop() }

    public func stop() { lock.lock(); stopped = true; lock.broadcast(); lock.unlock() }

    /// Indices of the images of iteration n (1-based iterations).
    func indices(iteration n: Int) -> [Int] {
        let count = dataset.count
        return (0..<batchSize).map { j in
            let flat = (n - 1) * batchSize + j
            let epoch = flat / count, pos = flat % count
            return permutation(epoch: epoch)[pos]
        }
    }

    /// The last epoch's order; `make` runs on the loader's thread and on callers', so it is locked.
    private var permCache: (Int, [Int])?
    private let permLock = NSLock()
    private func permutation(epoch: Int) -> [Int] {
        permLock.lock()
        defer { permLock.unlock() }
        if let (e, p) = permCache, e == epoch { return p }
        var rng = RNG(seed: seed &* 0x9E37_79B9 &+ UInt64(epoch) &+ 1)
        var p = Array(0..<dataset.count)
        for i in stride(from: p.count - 1, to: 0, by: -1) { p.swapAt(i, rng.int(below: i + 1)) }
        permCache = (epoch, p)
        return p
    }

    /// The batch of iteration n (blocks until the loader has produced it).
    public func batch(iteration n: Int) throws -> TrainingBatch {
        lock.lock()
        defer { lock.unlock() }
        while ready[n] == nil && !stopped { lock.wait() }
        guard let r = ready.removeValue(forKey: n) else { throw AFAError.invalidInput("data loader stopped") }
        lock.broadcast()
        return try r.get()
    }

    private func produce() {
        while true {
            lock.lock()
            while !stopped && ready.count >= lookahead { lock.wait() }
            if stopped { lock.unlock(); return }
            let n = nextToProduce
            nextToProduce += 1
            lock.unlock()
            let result = Result { try make(iteration: n) }
            lock.lock()
            ready[n] = result
            lock.broadcast()
            lock.unlock()
        }
    }

    /// Builds the batch (this loader's shard of it) of iteration n.
    public func make(iteration n: Int) throws -> TrainingBatch {
        let c = augmentation.cropSize
        let b = batchSize / shard.count, first = shard.index * b
        let images = Tensor(zeros: [b, 3, c, c])
        let k = dataset.numClasses - 1
        let cls = Tensor(zeros: [b, k])
        var boxes: [ImageBox] = []
        let all = indices(iteration: n)
        for i in 0..<b {
            let (j, idx) = (first + i, all[first + i])
            let img = try ImageCodec.readRGB(dataset.imagePath(idx))
            var rng = RNG(seed: seed &+ 0x51_7CC1 &* UInt64(n) &+ UInt64(j) &* 0x2545_F491)
            boxes.append(augmentation.apply(img, rng: &rng, into: images.data + i * 3 * c * c))
            for (q, v) in dataset.multiHot(idx).enumerated() { cls.data[i * k + q] = v }
        }
        return TrainingBatch(images: images, clsLabel: cls, boxes: boxes)
    }
}

/// The weights of one axis of `Augmentation.resize`: for each output index the first source index and
/// the triangle-filter weights of the source pixels it covers, in Pillow's 22-bit fixed point.
struct BilinearTaps {
    static let precisionBits: Int32 = 22
    static let half: Int32 = 1 << (precisionBits - 1)
    private var starts: [Int] = []
    private var counts: [Int] = []
    private var weights: [Int32] = []
    private let stride: Int

    init(from source: Int, to target: Int) {
        let scale = Double(source) / Double(target)
        let filterScale = max(scale, 1)
        let support = filterScale      // the triangle's half-width (1) widened by the reduction
        stride = Int(support.rounded(.up)) * 2 + 1
        weights = [Int32](repeating: 0, count: target * stride)
        var k = [Double](repeating: 0, count: stride)
        for o in 0..<target {
            let center = (Double(o) + 0.5) * scale
            let lo = max(Int(center - support + 0.5), 0)
            let n = min(Int(center + support + 0.5), source) - lo
            var sum = 0.0
            for t in 0..<n {
                k[t] = max(0, 1 - abs((Double(t + lo) - center + 0.5) / filterScale))
                sum += k[t]
            }
            for t in 0..<n {
                let w = sum != 0 ? k[t] / sum : k[t]
                weights[o * stride + t] = Int32((w < 0 ? -0.5 : 0.5) + w * Double(1 << Self.precisionBits))
            }
            starts.append(lo); counts.append(n)
        }
    }

    func window(_ o: Int) -> (start: Int, taps: ArraySlice<Int32>) {
        let base = o * stride
        return (starts[o], weights[base..<(base + counts[o])])
    }

    static func clip8(_ acc: Int32) -> UInt8 {
        if acc <= 0 { return 0 }
        if acc >= (Int32(1) << (precisionBits + 8)) { return 255 }
        return UInt8(acc >> precisionBits)
    }
}
