import Foundation
import Layers
import TensorCore

extension AFAModel {
    /// Fresh-model initialisation as SegFormer/AFA do it: encoder Linear weights truncated normal
    /// (std `linearStd`, bounds ±2), conv weights normal with std √(2 / fan_out), biases zero,
    /// norms one/zero; decoder layers PyTorch's default uniform(±1/√fan_in); the fuse conv Kaiming
    /// normal (ReLU gain, fan_in); the AFA head Kaiming normal (a = √5, fan_out) with a uniform bias;
    /// the classifier uniform(±1/√C4).
    public func initialize(seed: UInt64, linearStd: Float = 0.02) {
        var rng = RNG(seed: seed)
        for p in encoder.parameters {
            let n = p.name
            if n.hasSuffix(".bias") { p.value.fill(0); continue }
            if isNorm(n) { p.value.fill(1); continue }
            if p.shape.count == 2 {
                p.value.fillTruncatedNormal(std: linearStd, a: -2, b: 2, rng: &rng)
            } else {
                let (out, groupsIn, kh, kw) = (p.shape[0], p.shape[1], p.shape[2], p.shape[3])
                // depthwise convs have groups = out channels
                let groups = n.contains("dwconv") ? out : 1
                _ = groupsIn
                let fanOut = kh * kw * out / groups
                p.value.fillNormal(std: Float((2.0 / Double(fanOut)).squareRoot()), rng: &rng)
            }
        }
        for p in decoder.parameters {
            if p.name.hasSuffix("bn.weight") { p.value.fill(1); continue }
            if p.name.hasSuffix("bn.bias") { p.value.fill(0); continue }
            let fanIn = decoderFanIn(p)
            let bound = Float(1 / Double(fanIn).squareRoot())
            p.value.fillUniform(-bound, bound, rng: &rng)
        }
        for b in buffers { b.value.fill(b.name.hasSuffix("running_var") ? 1 : 0) }
        decoder.bn.numBatchesTracked.value = 0
        let fuse = decoder.fuse.weight
        fuse.value.fillNormal(std: Float((2.0 / Double(fuse.shape[1])).squareRoot()), rng: &rng)
        // Kaiming normal, a = √5, fan_out = 1 for the 1-output head: std = √(2 / (1 + 5)) / √fan_out
        let w = affinityHead.weight
        w.value.fillNormal(std: Float((2.0 / 6.0).squareRoot() / Double(w.shape[0]).squareRoot()), rng: &rng)
        let hb = Float(1 / Double(w.shape[1]).squareRoot())
        affinityHead.bias.value.fillUniform(-hb, hb, rng: &rng)
        let cb = Float(1 / Double(classifier.inFeatures).squareRoot())
        classifier.weight.value.fillUniform(-cb, cb, rng: &rng)
    }

    /// Encoder parameters of LayerNorms (patch-embed norms, block norms, spatial-reduction norms,
    /// stage norms): frozen by the optimiser's norm group.
    func isNorm(_ name: String) -> Bool { name.contains("norm") }

    private func decoderFanIn(_ p: Parameter) -> Int {
        // weights: (out, in[, 1, 1]); biases use their layer's fan-in
        if p.shape.count >= 2 { return p.shape.dropFirst().reduce(1, *) }
        let layer = String(p.name.dropLast(".bias".count))
        if let w = decoder.parameters.first(where: { $0.name == layer + ".weight" }) { return w.shape.dropFirst().reduce(1, *) }
        return max(p.shape[0], 1)
    }
}
