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
                    let (ar, fr, tr) = (a + y * w, f + y * w, t + y * w)
                    // 16 pixels at a time against the mirror's 16, read forwards and reversed in lanes;
                    // the selects are `max`'s own (the later operand when ≥), so the bits are the scalar tail's
                    var xx = 0
                    while xx + vecWidth <= w {
                        let av = load(ar + xx), fv = reversedLanes(load(fr + (w - xx - vecWidth)))
                        let v = av.replacing(with: fv, where: fv .>= av)
                        store(load(tr + xx) + v.replacing(with: 0, where: Vec(repeating: 0) .>= v), tr + xx)
                        xx += vecWidth
                    }
                    while xx < w { tr[xx] += max(max(ar[xx], fr[w - 1 - xx]), 0); xx += 1 }
                }
            } else {
                for p in 0..<plane { t[p] += max(a[p], 0) }
            }
        }
    }

    @inline(__always) private func reversedLanes(_ v: Vec) -> Vec {
        Vec(v[15], v[14], v[13], v[12], v[11], v[10], v[9], v[8], v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0])
    }

    /// The fused maps, min–max normalised per image and class.
    func normalized() -> Tensor {
        let plane = height * width
        Parallel.forEach(batch * classes) { i in
            let t = total.data + i * plane
            // min and max in 16 lanes, then across them (exact, so the order does not matter); a scalar
            // running min or max is one dependent chain over the plane
            let body = plane / vecWidth * vecWidth
            var lov = Vec(repeating: .infinity)
            for p in stride(from: 0, to: body, by: vecWidth) { let v = load(t + p); lov = lov.replacing(with: v, where: v .< lov) }
            var lo = -vmax(-lov)
            for p in body..<plane { lo = min(lo, t[p]) }
            var hiv = Vec(repeating: -.infinity)
            for p in stride(from: 0, to: body, by: vecWidth) {
                let v = load(t + p) - lo
                store(v, t + p)
                hiv = hiv.replacing(with: v, where: v .> hiv)
            }
            var hi = vmax(hiv)
            for p in body..<plane { t[p] -= lo; hi = max(hi, t[p]) }
            let d = hi + 1e-5
            for p in stride(from: 0, to: body, by: vecWidth) { store(load(t + p) / d, t + p) }
            for p in body..<plane { t[p] /= d }
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
            // only the largest scale's affinity is used: the other passes skip the head
            let (raw, aff) = try camForward(ImageOps.withFlips(x), ws, affinity: si == largest)
            raws.append(raw)
            if si == largest { affinity = aff }
            try fusion.add(raw: raw, flipped: true)
        }
        return MultiScaleCAM(cams: fusion.normalized(), affinity: affinity!, raw: raws)
    }
}
