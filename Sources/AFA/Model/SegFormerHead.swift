import Layers
import TensorCore

/// SegFormer's all-MLP decoder: each stage map → Linear(C_i → E) per pixel, bilinear to stage 1's
/// size, concatenated as [c4, c3, c2, c1], 1×1 conv (no bias) + BatchNorm + ReLU (one pass), Dropout2d,
/// 1×1 conv → class logits at 1/4 resolution. Works channels-last; returns NCHW logits.
public final class SegFormerHead: Module {
    public let linears: [Linear]          // linear_c1 … linear_c4
    public let fuse: Linear               // linear_fuse.conv (1×1, no bias)
    public let bn: BatchNorm2d            // linear_fuse.bn
    public let pred: Linear               // linear_pred (1×1 with bias)
    let dropout: Dropout
    public let embed: Int

    /// What backward needs: the resizes used (nil for c1) and the shapes of the stage maps.
    private struct Saved { var resizes: [BilinearResize?]; var grid: (b: Int, h: Int, w: Int); var stageShapes: [[Int]] }

    init(config: ModelConfig, prefix: String = "decoder") {
        embed = config.embeddingDim
        linears = (0..<4).map { Linear(name: key(prefix, "linear_c\($0 + 1)", "proj"), in: config.embedDims[$0], out: config.embeddingDim) }
        fuse = Linear(name: key(prefix, "linear_fuse.conv"), in: 4 * config.embeddingDim, out: config.embeddingDim,
                      bias: false, asConv1x1: true)
        bn = BatchNorm2d(name: key(prefix, "linear_fuse.bn"), channels: config.embeddingDim, eps: config.bnEps,
                         momentum: config.bnMomentum)
        pred = Linear(name: key(prefix, "linear_pred"), in: config.embeddingDim, out: config.numClasses, asConv1x1: true)
        dropout = Dropout(rate: config.headDropout, mode: .channels)
    }

    /// Stage maps channels-last → logits (B, numClasses, h1, w1).
    func forward(_ stages: [Tensor], _ ws: Workspace) throws -> Tensor {
        let (b, h, w) = (stages[0].shape[0], stages[0].shape[1], stages[0].shape[2])
        let e = embed
        let cat = Tensor(uninitialized: [b, h, w, 4 * e])
        var resizes: [BilinearResize?] = []
        // Each stage's projection (upsampled, for stages 2-4) is written straight into its channel block.
        for (slot, i) in [3, 2, 1, 0].enumerated() {
            if i != 0 {
                let y = try linears[i].forward(stages[i], ws)       // (B, h_i, w_i, E)
                let r = BilinearResize(inH: y.shape[1], inW: y.shape[2], outH: h, outW: w)
                try r.forward(y, into: cat.data + slot * e, pixelStride: 4 * e)
                resizes.append(r)
            } else {
                try linears[i].forward(stages[i], ws, into: cat.data + slot * e, rowStride: 4 * e)
                resizes.append(nil)
            }
        }
        ws.save(Saved(resizes: resizes, grid: (b, h, w), stageShapes: stages.map(\.shape)), for: self)
        let fused = try fuse.forward(cat, ws)
        let act = try bn.forward(fused, ws, thenReLU: true, overwritingInput: true)
        let dropped = dropout.forward(act, ws)
        let logits = try pred.forward(dropped, ws)               // (B, h, w, K)
        return try logits.permuted([0, 3, 1, 2])
    }

    /// dLogits (B, K, h1, w1) → gradients of the four stage maps (channels-last).
    func backward(_ dLogits: Tensor, _ ws: Workspace) throws -> [Tensor] {
        let saved = try ws.take(Saved.self, for: self, name: "decoder")
        let (b, h, w) = saved.grid
        let e = embed
        let dl = try dLogits.permuted([0, 2, 3, 1])
        let dAct = try dropout.backward(try pred.backward(dl, ws), ws)
        let dCat = try fuse.backward(try bn.backward(dAct, ws), ws)
        var out = [Tensor?](repeating: nil, count: 4)
        for (slot, i) in [3, 2, 1, 0].enumerated() {
            let dy = Tensor(uninitialized: [b, h, w, e])             // every pixel's block copied below
            for p in 0..<(b * h * w) { (dy.data + p * e).update(from: dCat.data + p * 4 * e + slot * e, count: e) }
            let dyi = try saved.resizes[slot].map { try $0.backward(dy) } ?? dy
            out[i] = try linears[i].backward(dyi, ws)
        }
        return try out.enumerated().map { try $0.element!.reshaped(saved.stageShapes[$0.offset]) }
    }
}

/// The AFA head: the raw attention of the last two blocks (B, 2·heads, N, N), symmetrised A + Aᵀ,
/// a 1×1 conv to one channel (with bias) and a sigmoid → predicted affinity (B, N, N).
public final class AffinityHead: Module {
    public let weight: Parameter   // attn_proj.weight (1, channels, 1, 1)
    public let bias: Parameter     // attn_proj.bias (1)
    public let channels: Int

    init(channels: Int, name: String = "attn_proj") {
        self.channels = channels
        weight = Parameter(name: key(name, "weight"), shape: [1, channels, 1, 1])
        bias = Parameter(name: key(name, "bias"), shape: [1])
    }

    /// `attns`: the raw logits of the blocks to use, each (B, heads_i, N, N).
    func forward(_ attns: [Tensor], _ ws: Workspace) throws -> Tensor {
        guard let first = attns.first else { throw LayerError.badInput(layer: "attn_proj", shape: [], expected: "raw attention") }
        let b = first.shape[0], n = first.shape[2]
        let split = attns.map { $0.shape[1] }
        guard split.reduce(0, +) == channels, attns.allSatisfy({ $0.shape == [b, $0.shape[1], n, n] }) else {
            throw LayerError.badInput(layer: "attn_proj", shape: attns.map(\.shape).flatMap { $0 },
                                      expected: "\(channels) square attention maps of one size")
        }
        // conv(A + Aᵀ) = S + Sᵀ with S = Σ_c w_c·A_c: one pass that reads every channel's map once and
        // writes S once, and a single transpose per image, instead of a transposed read of every map
        let nn = n * n
        let weighted = Tensor(uninitialized: [b, n, n])
        let pred = Tensor(uninitialized: [b, n, n])
        let wv = weight.value.data, bv = bias.value.data[0]
        let weights = (0..<channels).map { wv[$0] }
        for bi in 0..<b {
            let maps = attns.flatMap { a in (0..<a.shape[1]).map { UnsafePointer(a.data + (bi * a.shape[1] + $0) * nn) } }
            Kernels.weightedSum(maps, weights: weights, into: weighted.data + bi * nn, nn)
            Kernels.addTransposed(weighted.data + bi * nn, plus: bv, into: pred.data + bi * nn, n: n)
        }
        Kernels.sigmoid(pred.data, pred.data, pred.count)
        ws.save((attns, pred), for: self)
        return pred
    }

    /// dPred (B, N, N) → gradients of the input attention maps.
    func backward(_ dPred: Tensor, _ ws: Workspace) throws -> [Tensor] {
        let (attns, pred) = try ws.take(([Tensor], Tensor).self, for: self, name: "attn_proj")
        let b = pred.shape[0], n = pred.shape[1], nn = n * n
        let dz = Tensor(uninitialized: pred.shape)
        Kernels.sigmoidBackward(pred.data, dPred.data, dz.data, pred.count)
        // every channel sees dz through A_c + A_cᵀ, so its gradient is G = dz + dzᵀ: dA_c = w_c·G and
        // dw_c = Σ G ⊙ A_c
        let g = Tensor(uninitialized: pred.shape)
        for bi in 0..<b { Kernels.addTransposed(dz.data + bi * nn, plus: 0, into: g.data + bi * nn, n: n) }
        let gw = try ws.gradient(weight).data, gb = try ws.gradient(bias).data
        gb[0] += Float(dz.sum())
        var outs: [Tensor] = []
        var ch = 0
        for a in attns {
            let heads = a.shape[1]
            let d = Tensor(uninitialized: a.shape)
            for hc in 0..<heads {
                var s = 0.0
                for bi in 0..<b {
                    let off = (bi * heads + hc) * nn
                    s += Kernels.dot(g.data + bi * nn, a.data + off, nn)
                    Kernels.scale(g.data + bi * nn, weight.value.data[ch + hc], d.data + off, nn)
                }
                gw[ch + hc] += Float(s)
            }
            outs.append(d)
            ch += heads
        }
        return outs
    }
}
