import TensorCore

/// The fused multi-scale class activation maps of a batch and the affinity of the largest scale.
public struct MultiScaleCAM {
    /// (B, C−1, H, W), per image and class min–max normalised to [0, 1).
    public var cams: Tensor
    /// `attn_pred` of the largest scale's pass: (2B, N', N'), the B images then their flips.
    public var affinity: Tensor
    /// Raw classifier maps of each scale's pass (2B, C−1, h_s, w_s), before resize and ReLU.
    public var raw: [Tensor]
}

/// Fuses class activation maps over scales: each scale's raw classifier map (the images, then their
/// mirrors when flipped) is resized to the image size; an image's map and its mirror's, flipped back,
/// are combined by max; ReLU; the scales are summed; at the end each image's class maps are min–max
/// normalised (cam −= min, cam /= max + 1e-5).
struct CAMFusion {
    let batch: Int, classes: Int, height: Int, width: Int
    let total: Tensor

    init(batch: Int, classes: Int, height: Int, width: Int) {
        self.batch = batch; self.classes = classes; self.height = height; self.width = width
        total = Tensor(zeros: [batch, classes, height, width])
    }

    /// Adds one scale: `raw` is (B, K, hs, ws), or (2B, K, hs, ws) with the mirrors after the images.
    func add(raw: Tensor, flipped: Bool) throws {
        let (b, k, h, w) = (batch, classes, height, width)
        let plane = h * w
        let up = try ImageOps.resize(raw, height: h, width: w)
        // One task per (image, class) plane: every plane is independent.
        Parallel.forEach(b * k) { ic in
            let (i, c) = (ic / k, ic % k)
            let a = up.data + (i * k + c) * plane
            let t = total.data + (i * k + c) * plane
            if flipped {
                let f = up.data + ((b + i) * k + c) * plane
                for y in 0..<h {
                    for xx in 0..<w {
                        let v = max(a[y * w + xx], f[y * w + (w - 1 - xx)])
                        t[y * w + xx] += max(v, 0)
                    }
                }
            } else {
                for p in 0..<plane { t[p] += max(a[p], 0) }
            }
        }
    }

    /// The fused maps, min–max normalised per image and class.
    func normalized() -> Tensor {
        let plane = height * width
        Parallel.forEach(batch * classes) { i in
            let t = total.data + i * plane
            var lo = Float.infinity
            for p in 0..<plane { lo = min(lo, t[p]) }
            var hi = -Float.infinity
            for p in 0..<plane { t[p] -= lo; hi = max(hi, t[p]) }
            let d = hi + 1e-5
            for p in 0..<plane { t[p] /= d }
        }
        return total
    }
}

extension AFAModel {
    /// CAMs of the images and their horizontal flips at several scales (encoder and classifier only,
    /// no decoder, no gradients). Per scale s: input resized to (⌊sH⌋, ⌊sW⌋), batch [x, flip(x)], fused
    /// by `CAMFusion`. Also returns the affinity of the largest scale's pass.
    ///
    /// The passes run in the workspace's mode and random stream (a training step's CAMs see the same
    /// drop-path draws as the method's) and keep nothing for backward.
    public func multiScaleCAM(_ images: Tensor, scales: [Double], _ ws: Workspace) throws -> MultiScaleCAM {
        guard let largest = scales.indices.max(by: { scales[$0] < scales[$1] || (scales[$0] == scales[$1] && $0 > $1) }) else {
            throw AFAError.invalidInput("multi-scale CAM: no scales given")
        }
        let (b, h, w) = (images.shape[0], images.shape[2], images.shape[3])
        let fusion = CAMFusion(batch: b, classes: config.numClasses - 1, height: h, width: w)
        var raws: [Tensor] = []
        var affinity: Tensor?
        for (si, s) in scales.enumerated() {
            let x = s == 1.0 ? images : try ImageOps.resize(images, height: Int(s * Double(h)), width: Int(s * Double(w)))
            let (raw, aff) = try camForward(ImageOps.withFlips(x), ws)
            raws.append(raw)
            if si == largest { affinity = aff }
            try fusion.add(raw: raw, flipped: true)
        }
        return MultiScaleCAM(cams: fusion.normalized(), affinity: affinity!, raw: raws)
    }
}
