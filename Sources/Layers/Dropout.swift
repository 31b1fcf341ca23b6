import TensorCore

/// Inverted dropout with a seeded generator. `elementwise` drops single values (Dropout);
/// `channels` drops whole channels of each (B, H, W, C) map (Dropout2d); `samples` drops a whole
/// sample's residual branch (drop-path / stochastic depth). Identity when the rate is 0 or in eval
/// mode; the mask is drawn from the workspace's random stream.
public final class Dropout: Module {
    public enum Mode: Sendable { case elementwise, channels, samples }
    public let rate: Float
    public let mode: Mode

    public init(rate: Float, mode: Mode = .elementwise) {
        precondition(rate >= 0 && rate < 1, "dropout rate must be in [0, 1)")
        self.rate = rate
        self.mode = mode
    }

    public func isActive(in ws: Workspace) -> Bool { ws.isTraining && rate > 0 }

    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        guard isActive(in: ws) else { ws.save(Optional<Tensor>.none as Any, for: self); return x }
        let keep = 1 - rate, scale = 1 / keep
        let m = Tensor(uninitialized: x.shape)
        switch mode {
        case .elementwise:
            for i in 0..<x.count { m.data[i] = ws.rng.bernoulli(Double(keep)) ? scale : 0 }
        case .channels:
            let b = x.shape[0], c = x.shape.last!, per = x.count / (b * c)
            for bi in 0..<b {
                for j in 0..<c {
                    let v: Float = ws.rng.bernoulli(Double(keep)) ? scale : 0
                    for p in 0..<per { m.data[(bi * per + p) * c + j] = v }
                }
            }
        case .samples:
            let b = x.shape[0], per = x.count / b
            for bi in 0..<b {
                let v: Float = ws.rng.bernoulli(Double(keep)) ? scale : 0
                (m.data + bi * per).update(repeating: v, count: per)
            }
        }
        ws.save(Optional(m) as Any, for: self)
        let y = Tensor(uninitialized: x.shape)
        Kernels.mul(x.data, m.data, y.data, x.count)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        guard let m = try ws.take(Tensor?.self, for: self, name: "Dropout") else { return dy }
        let dx = Tensor(uninitialized: dy.shape)
        Kernels.mul(dy.data, m.data, dx.data, dy.count)
        return dx
    }
}
