import TensorCore

/// y = x · Wᵀ + b over the last axis (tokens: (…, in) → (…, out)).
///
/// The weight is stored as PyTorch stores it, (out, in) — or (out, in, 1, 1) for the 1×1 convolutions
/// that act on channels-last maps as a Linear.
public final class Linear: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let inFeatures: Int
    public let outFeatures: Int

    /// - Parameters:
    ///   - name: state-dict prefix (`encoder.block1.0.attn.q`).
    ///   - asConv1x1: store the weight as (out, in, 1, 1) (a 1×1 Conv2d's key layout).
    public init(name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true, asConv1x1: Bool = false) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Parameter(name: key(name, "weight"),
                           shape: asConv1x1 ? [outFeatures, inFeatures, 1, 1] : [outFeatures, inFeatures])
        self.bias = bias ? Parameter(name: key(name, "bias"), shape: [outFeatures]) : nil
    }

    /// Applies the layer to every row of `x` (last axis = in features). Keeps x for backward.
    public func forward(_ x: Tensor, _ ws: Workspace) throws -> Tensor {
        guard x.shape.last == inFeatures else {
            throw LayerError.badInput(layer: weight.name, shape: x.shape, expected: "(…, \(inFeatures))")
        }
        ws.save(x, for: self)
        let rows = x.count / inFeatures
        var outShape = x.shape
        outShape[outShape.count - 1] = outFeatures
        let y = Tensor(uninitialized: outShape)   // seeded with the bias or written with beta = 0
        if let b = bias {
            // Seed every row with the bias, then accumulate the product (beta = 1).
            for r in 0..<rows { (y.data + r * outFeatures).update(from: b.value.data, count: outFeatures) }
        }
        sgemm(.none, .transposed, m: rows, n: outFeatures, k: inFeatures, a: x.data, lda: inFeatures,
              b: weight.value.data, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: y.data, ldc: outFeatures)
        return y
    }

    /// dW += dyᵀ·x, db += Σ dy, returns dx = dy·W.
    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let x = try ws.take(Tensor.self, for: self, name: weight.name)
        guard dy.shape.last == outFeatures, dy.count / outFeatures == x.count / inFeatures else {
            throw LayerError.badInput(layer: weight.name + " (backward)", shape: dy.shape, expected: "(…, \(outFeatures))")
        }
        let rows = x.count / inFeatures
        sgemm(.transposed, .none, m: outFeatures, n: inFeatures, k: rows, a: dy.data, lda: outFeatures,
              b: x.data, ldb: inFeatures, beta: 1, c: try ws.gradient(weight).data, ldc: inFeatures)
        if let b = bias { columnSums(dy.data, rows: rows, cols: outFeatures, into: try ws.gradient(b).data) }
        let dx = Tensor(zeros: x.shape)
        sgemm(.none, .none, m: rows, n: inFeatures, k: outFeatures, a: dy.data, lda: outFeatures,
              b: weight.value.data, ldb: inFeatures, c: dx.data, ldc: inFeatures)
        return dx
    }
}

/// out[j] += Σ_r x[r, j], accumulated in Double per column, deterministic.
public func columnSums(_ x: UnsafePointer<Float>, rows: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
    var acc = [Double](repeating: 0, count: cols)
    for r in 0..<rows {
        let row = x + r * cols
        for j in 0..<cols { acc[j] += Double(row[j]) }
    }
    for j in 0..<cols { out[j] += Float(acc[j]) }
}
