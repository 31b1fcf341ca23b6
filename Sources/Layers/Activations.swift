import TensorCore

/// Exact GELU, y = x·Φ(x); keeps its input for backward.
public final class GELU: Module {
    public init() {}

    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        ws.save(x, for: self)
        let y = Tensor(zeros: x.shape)
        Kernels.gelu(x.data, y.data, x.count)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let x = try ws.take(Tensor.self, for: self, name: "GELU")
        let dx = Tensor(zeros: x.shape)
        Kernels.geluBackward(x.data, dy.data, dx.data, x.count)
        return dx
    }
}

/// ReLU, y = max(x, 0); keeps its output for backward (the mask).
public final class ReLU: Module {
    public init() {}

    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        let y = Tensor(zeros: x.shape)
        Kernels.relu(x.data, y.data, x.count)
        ws.save(y, for: self)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let y = try ws.take(Tensor.self, for: self, name: "ReLU")
        let dx = Tensor(zeros: y.shape)
        for i in 0..<y.count { dx.data[i] = y.data[i] > 0 ? dy.data[i] : 0 }
        return dx
    }
}

/// Sigmoid, y = 1/(1 + e^−x); keeps its output for backward.
public final class Sigmoid: Module {
    public init() {}

    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        let y = Tensor(zeros: x.shape)
        Kernels.sigmoid(x.data, y.data, x.count)
        ws.save(y, for: self)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let y = try ws.take(Tensor.self, for: self, name: "Sigmoid")
        let dx = Tensor(zeros: y.shape)
        for i in 0..<y.count { dx.data[i] = dy.data[i] * y.data[i] * (1 - y.data[i]) }
        return dx
    }
}
