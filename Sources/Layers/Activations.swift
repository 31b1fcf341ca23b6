import TensorCore

/// Exact GELU, y = x·Φ(x); caches its input.
public final class GELU {
    private var input: Tensor?
    public init() {}

    public func forward(_ x: Tensor) -> Tensor {
        input = GradMode.isEnabled ? x : nil
        let y = Tensor(zeros: x.shape)
        Kernels.gelu(x.data, y.data, x.count)
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let x = input else { throw LayerError.backwardBeforeForward("GELU") }
        let dx = Tensor(zeros: x.shape)
        Kernels.geluBackward(x.data, dy.data, dx.data, x.count)
        return dx
    }

    public func release() { input = nil }
}

/// ReLU, y = max(x, 0); caches its output (the mask).
public final class ReLU {
    private var output: Tensor?
    public init() {}

    public func forward(_ x: Tensor) -> Tensor {
        let y = Tensor(zeros: x.shape)
        Kernels.relu(x.data, y.data, x.count)
        output = GradMode.isEnabled ? y : nil
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let y = output else { throw LayerError.backwardBeforeForward("ReLU") }
        let dx = Tensor(zeros: y.shape)
        for i in 0..<y.count { dx.data[i] = y.data[i] > 0 ? dy.data[i] : 0 }
        return dx
    }

    public func release() { output = nil }
}

/// Sigmoid, y = 1/(1 + e^−x); caches its output.
public final class Sigmoid {
    private var output: Tensor?
    public init() {}

    public func forward(_ x: Tensor) -> Tensor {
        let y = Tensor(zeros: x.shape)
        Kernels.sigmoid(x.data, y.data, x.count)
        output = GradMode.isEnabled ? y : nil
        return y
    }

    public func backward(_ dy: Tensor) throws -> Tensor {
        guard let y = output else { throw LayerError.backwardBeforeForward("Sigmoid") }
        let dx = Tensor(zeros: y.shape)
        for i in 0..<y.count { dx.data[i] = dy.data[i] * y.data[i] * (1 - y.data[i]) }
        return dx
    }

    public func release() { output = nil }
}
