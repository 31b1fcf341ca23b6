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

    /// Applies the layer to every row of `x` (last axis = in features). Keeps x for backward unless
    /// `keepingInput` is false: a caller that can rebuild x cheaply passes it to `backward(_:input:_:)`.
    /// x is kept by reference, not copied: the caller must not write into it before backward has run.
    public func forward(_ x: Tensor, _ ws: Workspace, keepingInput: Bool = true) throws -> Tensor {
        try checkInput(x, weight.name)
        var outShape = x.shape
        outShape[outShape.count - 1] = outFeatures
        let y = Tensor(uninitialized: outShape)   // seeded with the bias or written with beta = 0
        try forward(x, ws, keepingInput: keepingInput, into: y.data, rowStride: outFeatures)
        return y
    }

    /// `forward` writing row r of the result at `out + r·rowStride`: a column block of a wider buffer
    /// (the decoder's concatenation), filled in place instead of copied there afterwards.
    public func forward(_ x: Tensor, _ ws: Workspace, keepingInput: Bool = true,
                        into out: UnsafeMutablePointer<Float>, rowStride: Int) throws {
        try checkInput(x, weight.name)
        precondition(rowStride >= outFeatures, "Linear: row stride \(rowStride) below \(outFeatures) features")
        if keepingInput { ws.save(x, for: self) }
        let rows = x.count / inFeatures
        if let b = bias {
            // Seed every row with the bias, then accumulate the product (beta = 1).
            Kernels.broadcastRows(b.value.data, into: out, rows: rows, cols: outFeatures, rowStride: rowStride)
        }
        sgemm(.none, .transposed, m: rows, n: outFeatures, k: inFeatures, a: x.data, lda: inFeatures,
              b: weight.value.data, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: out, ldc: rowStride)
    }

    private func checkInput(_ x: Tensor, _ layer: String) throws {
        guard x.shape.last == inFeatures else {
            throw LayerError.badInput(layer: layer, shape: x.shape, expected: "(…, \(inFeatures))")
        }
    }

    /// dW += dyᵀ·x, db += Σ dy, returns dx = dy·W. The kept input is let go once the weight gradient
    /// has it, before dx is allocated, so the two never coexist (the decoder's fuse layer takes a
    /// 4E-wide input: the pass's peak).
    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        var x: Tensor? = try ws.take(Tensor.self, for: self, name: weight.name)
        try accumulateGradients(dy, input: x!, ws)
        x = nil
        return inputGradient(dy)
    }

    /// Backward with the forward's input given by the caller (a forward run with `keepingInput: false`).
    public func backward(_ dy: Tensor, input x: Tensor, _ ws: Workspace) throws -> Tensor {
        try accumulateGradients(dy, input: x, ws)
        return inputGradient(dy)
    }

    /// The parameter half of backward: dW += dyᵀ·x, db += Σ dy.
    public func accumulateGradients(_ dy: Tensor, input x: Tensor, _ ws: Workspace) throws {
        try checkInput(x, weight.name + " (backward input)")
        guard dy.shape.last == outFeatures, dy.count / outFeatures == x.count / inFeatures else {
            throw LayerError.badInput(layer: weight.name + " (backward)", shape: dy.shape, expected: "(…, \(outFeatures))")
        }
        let rows = x.count / inFeatures
        sgemm(.transposed, .none, m: outFeatures, n: inFeatures, k: rows, a: dy.data, lda: outFeatures,
              b: x.data, ldb: inFeatures, beta: 1, c: try ws.gradient(weight).data, ldc: inFeatures)
        if let b = bias { columnSums(dy.data, rows: rows, cols: outFeatures, into: try ws.gradient(b).data) }
    }

    /// The input half of backward: dx = dy·W, into `out` (which must hold dy's rows × in features) or
    /// a new tensor. `out` may be the forward's input once `accumulateGradients` is done with it.
    public func inputGradient(_ dy: Tensor, into out: Tensor? = nil) -> Tensor {
        precondition(dy.shape.last == outFeatures, "Linear: output gradient \(dy.shape) for \(outFeatures) features")
        let rows = dy.count / outFeatures
        var shape = dy.shape
        shape[shape.count - 1] = inFeatures
        let dx = out ?? Tensor(uninitialized: shape)   // written by the product (beta = 0)
        precondition(dx.count == rows * inFeatures, "Linear: input gradient buffer of \(dx.count) values for \(rows) × \(inFeatures)")
        sgemm(.none, .none, m: rows, n: inFeatures, k: outFeatures, a: dy.data, lda: outFeatures,
              b: weight.value.data, ldb: inFeatures, c: dx.data, ldc: inFeatures)
        return dx
    }
}

/// out[j] += Σ_r x[r, j], accumulated in Double per column over the rows in order.
///
/// Workers take blocks of columns, never of rows, so every column's sum is formed in the same order
/// whatever the number of workers: the result is bit-identical to a serial loop.
public func columnSums(_ x: UnsafePointer<Float>, rows: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
    let block = 32                                        // two cache lines of each row per task
    Parallel.forEach(Parallel.chunkCount(cols, grain: block)) { t in
        let j0 = t * block, width = min(block, cols - j0)
        withUnsafeTemporaryAllocation(of: Double.self, capacity: block) { acc in
            let a = acc.baseAddress!
            Kernels.columnBlockSums(rows: rows, j0, width: width, into: a) { r, j, n in Kernels.loadWidened(x + r * cols + j, n) }
            for j in 0..<width { out[j0 + j] += Float(a[j]) }
        }
    }
}
