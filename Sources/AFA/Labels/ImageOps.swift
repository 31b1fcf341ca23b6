import Layers
import TensorCore

/// Small image-space helpers shared by the CAM, PAR and label code. Maps are NCHW.
public enum ImageOps {
    /// ImageNet statistics of the input normalisation (RGB, 0…255 pixels).
    public static let mean: [Float] = [123.675, 116.28, 103.53]
    public static let std: [Float] = [58.395, 57.12, 57.375]

    /// Bilinear resize (B, C, H, W) → (B, C, h, w); returns the input itself when the size is unchanged.
    public static func resize(_ x: Tensor, height h: Int, width w: Int, alignCorners: Bool = false) throws -> Tensor {
        if x.shape[2] == h && x.shape[3] == w { return x }
        return try BilinearResize(inH: x.shape[2], inW: x.shape[3], outH: h, outW: w, alignCorners: alignCorners).forwardNCHW(x)
    }

    /// The batch followed by its horizontal mirror: (B, …) → (2B, …).
    public static func withFlips(_ x: Tensor) -> Tensor {
        let pair = Tensor(uninitialized: [2 * x.shape[0]] + Array(x.shape.dropFirst()))
        pair.data.update(from: x.data, count: x.count)
        let w = x.shape[x.rank - 1]
        let dst = pair.data + x.count
        for r in 0..<(x.count / w) {
            let s = x.data + r * w, d = dst + r * w
            for i in 0..<w { d[i] = s[w - 1 - i] }
        }
        return pair
    }

    /// Normalised images → pixels in [0, 1] as PAR sees them: x·std + mean in float32, truncated toward
    /// zero to an integer 0…255 (a uint8 cast), divided by 255.
    public static func denormalizeToUnit(_ x: Tensor) -> Tensor {
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let y = Tensor(zeros: x.shape)
        let plane = h * w
        for i in 0..<(b * c) {
            let ch = i % c
            let (s, m) = (std[ch % 3], mean[ch % 3])
            let src = x.data + i * plane, dst = y.data + i * plane
            for p in 0..<plane {
                let v = src[p] * s + m
                dst[p] = Float(min(max(v, 0), 255).rounded(.towardZero)) / 255
            }
        }
        return y
    }

    /// Token grid of the last stage for an h×w input (conv k7 p3, then k3 p1, with the given strides).
    public static func stage4Grid(height: Int, width: Int, strides: [Int]) -> (h: Int, w: Int) {
        var (h, w) = (height, width)
        for (k, s) in zip([7, 3, 3, 3], strides) {
            h = (h + 2 * (k / 2) - k) / s + 1
            w = (w + 2 * (k / 2) - k) / s + 1
        }
        return (h, w)
    }
}

/// An image's valid region `[h0, h1) × [w0, w1)` (the crop may be padded), Python-slice semantics:
/// bounds are clamped to the image.
public struct ImageBox: Equatable, Sendable, Codable {
    public var h0: Int, h1: Int, w0: Int, w1: Int

    public init(h0: Int, h1: Int, w0: Int, w1: Int) { self.h0 = h0; self.h1 = h1; self.w0 = w0; self.w1 = w1 }

    /// The whole image.
    public static func full(height: Int, width: Int) -> ImageBox { ImageBox(h0: 0, h1: height, w0: 0, w1: width) }

    /// The box clamped to an h×w image (possibly empty).
    public func clamped(height: Int, width: Int) -> ImageBox {
        let a = min(max(h0, 0), height), b = min(max(h1, 0), height)
        let c = min(max(w0, 0), width), d = min(max(w1, 0), width)
        return ImageBox(h0: a, h1: max(a, b), w0: c, w1: max(c, d))
    }

    public var height: Int { h1 - h0 }
    public var width: Int { w1 - w0 }

    public func contains(y: Int, x: Int) -> Bool { y >= h0 && y < h1 && x >= w0 && x < w1 }
}
