import TensorCore

/// Exact GELU, y = x·Φ(x); keeps its input for backward.
public final class GELU: Module {
    public init() {}

    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        ws.save(x, for: self)
        let y = Tensor(uninitialized: x.shape)   // every element written by the kernel
        Kernels.gelu(x.data, y.data, x.count)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let x = try ws.take(Tensor.self, for: self, name: "GELU")
        let dx = Tensor(uninitialized: x.shape)
        Kernels.geluBackward(x.data, dy.data, dx.data, x.count)
        return dx
    }
}

/// ReLU, y = max(x, 0); keeps its output for backward (the mask).
public final class ReLU: Module {
    public init() {}

    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        Kernels.relu(x.data, y.data, x.count)
        ws.save(y, for: self)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let y = try ws.take(Tensor.self, for: self, name: "ReLU")
        let dx = Tensor(uninitialized: y.shape)
        Kernels.reluBackward(y.data, dy.data, dx.data, y.count)
        return dx
    }
}

/// Sigmoid, y = 1/(1 + e^−x); keeps its output for backward.
public final class Sigmoid: Module {
    public init() {}

    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        Kernels.sigmoid(x.data, y.data, x.count)
        ws.save(y, for: self)
        return y
    }

    public func backward(_ dy: Tensor, _ ws: Workspace) throws -> Tensor {
        let y = try ws.take(Tensor.self, for: self, name: "Sigmoid")
        let dx = Tensor(uninitialized: y.shape)
        Kernels.sigmoidBackward(y.data, dy.data, dx.data, y.count)
        return dx
    }
}
