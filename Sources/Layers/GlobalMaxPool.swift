import TensorCore

/// Global max pooling over the tokens of (B, N, C) → (B, C); the gradient goes to the (first) arg-max.
public final class GlobalMaxPool: Module {
    public init() {}

    /// Keeps the position of each maximum for backward.
    public func forward(_ x: Tensor, _ ws: Workspace) throws -> Tensor {
        guard x.rank == 3 else { throw LayerError.badInput(layer: "GlobalMaxPool", shape: x.shape, expected: "(B, N, C)") }
        let (b, n, c) = (x.shape[0], x.shape[1], x.shape[2])
        let y = Tensor(shape: [b, c], repeating: -.infinity)
        var argmax = [Int](repeating: 0, count: b * c)
        for bi in 0..<b {
            for t in 0..<n {
                let row = x.data + (bi * n + t) * c
                for j in 0..<c where row[j] > y.data[bi * c + j] {
                    y.data[bi * c + j] = row[j]
                    argmax[bi * c + j] = t
                }
            }
        }
        ws.save((argmax, x.shape), for: self)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let (argmax, inShape) = try ws.take(([Int], [Int]).self, for: self, name: "GlobalMaxPool")
        let (b, n, c) = (inShape[0], inShape[1], inShape[2])
        let dx = Tensor(zeros: inShape)
        for bi in 0..<b { for j in 0..<c { dx.data[(bi * n + argmax[bi * c + j]) * c + j] += dy.data[bi * c + j] } }
        return dx
    }
}
