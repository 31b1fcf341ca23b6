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

extension AFAModel {
    /// CAMs of the images and their horizontal flips at several scales (encoder and classifier only,
    /// no decoder, no gradients). Per scale s: input resized to (⌊sH⌋, ⌊sW⌋), batch [x, flip(x)], CAM
    /// resized to (H, W), max(cam, flip(cam of flip)), ReLU; summed over scales; per image and class
    /// cam −= min, cam /= (max + 1e-5).
    ///
    /// Overwrites the layers' backward caches: run it before the main forward of a training step.
    public func multiScaleCAM(_ images: Tensor, scales: [Double]) throws -> MultiScaleCAM {
        let (b, h, w) = (images.shape[0], images.shape[2], images.shape[3])
        let k = config.numClasses - 1
        let plane = h * w
        let total = Tensor(zeros: [b, k, h, w])
        var raws: [Tensor] = []
        var affinity: Tensor?
        let largest = scales.indices.max { scales[$0] < scales[$1] || (scales[$0] == scales[$1] && $0 > $1) }!
        for (si, s) in scales.enumerated() {
            let x = s == 1.0 ? images : try ImageOps.resize(images, height: Int(s * Double(h)), width: Int(s * Double(w)))
            let (raw, aff) = try camForward(ImageOps.withFlips(x))
            releaseCaches()
            raws.append(raw)
            if si == largest { affinity = aff }
            let up = try ImageOps.resize(raw, height: h, width: w)
            for i in 0..<b {
                for c in 0..<k {
                    let a = up.data + (i * k + c) * plane, f = up.data + ((b + i) * k + c) * plane
                    let t = total.data + (i * k + c) * plane
                    for y in 0..<h {
                        for xx in 0..<w {
                            let v = max(a[y * w + xx], f[y * w + (w - 1 - xx)])
                            t[y * w + xx] += max(v, 0)
                        }
                    }
                }
            }
        }
        for i in 0..<(b * k) {
            let t = total.data + i * plane
            var lo = Float.infinity
            for p in 0..<plane { lo = min(lo, t[p]) }
            var hi = -Float.infinity
            for p in 0..<plane { t[p] -= lo; hi = max(hi, t[p]) }
            let d = hi + 1e-5
            for p in 0..<plane { t[p] /= d }
        }
        return MultiScaleCAM(cams: total, affinity: affinity!, raw: raws)
    }
}
