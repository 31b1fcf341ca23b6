import Layers
import TensorCore
import XCTest

/// Central finite differences against a layer's backward.
///
/// The scalar checked is L = Σ_k Σ w_k ⊙ y_k over the layer's outputs y_k with fixed random weights w_k
/// (accumulated in Double). Every input element and parameter element is checked when the tensor is
/// small, otherwise a fixed random sample of them.
struct GradientCheck {
    var eps: Float = 1e-2
    /// Pass when |analytic − numeric| ≤ tol · max(|analytic|, |numeric|, 0.1 · max|analytic of the tensor|).
    var tol: Double = 1e-2
    var samples = 60

    /// `forward` runs the layer in the workspace it is given; `backward` differentiates the forward
    /// recorded in it. The perturbed forwards run in workspaces of the same mode that record nothing.
    func run(inputs: [Tensor], parameters: [Parameter], mode: Workspace.Mode = .training,
             forward: (Workspace) throws -> [Tensor],
             backward: ([Tensor], Workspace) throws -> [Tensor], file: StaticString = #filePath, line: UInt = #line) throws {
        var rng = RNG(seed: 99)
        let outs = try forward(Workspace(mode: mode, recording: false))
        let weights = outs.map { o -> Tensor in let t = Tensor(zeros: o.shape); t.fillUniform(-1, 1, rng: &rng); return t }
        func loss() throws -> Double {
            let ys = try forward(Workspace(mode: mode, recording: false))
            var s = 0.0
            for (y, w) in zip(ys, weights) { s += Kernels.dot(y.data, w.data, y.count) }
            return s
        }
        let grads = Gradients(for: parameters)
        let ws = Workspace(mode: mode, recording: true, gradients: grads)
        _ = try forward(ws)
        let dInputs = try backward(weights, ws)
        XCTAssertEqual(ws.savedCount, 0, "backward left saved state behind", file: file, line: line)
        XCTAssertEqual(dInputs.count, inputs.count, file: file, line: line)
        var targets: [(String, Tensor, Tensor)] = []
        for (i, (x, dx)) in zip(inputs, dInputs).enumerated() {
            XCTAssertEqual(x.shape, dx.shape, "input \(i) gradient shape", file: file, line: line)
            targets.append(("input \(i)", x, dx))
        }
        // Snapshot the parameter gradients: the perturbed forwards below do not touch them.
        for p in parameters { targets.append((p.name, p.value, grads[p].copy())) }
        for (label, value, analytic) in targets {
            let scale = Double(analytic.maxAbs())
            let idx: [Int] = value.count <= samples ? Array(0..<value.count)
                : (0..<samples).map { _ in rng.int(below: value.count) }
            for i in idx {
                let old = value.data[i]
                value.data[i] = old + eps
                let lp = try loss()
                value.data[i] = old - eps
                let lm = try loss()
                value.data[i] = old
                let numeric = (lp - lm) / Double(2 * eps)
                let a = Double(analytic.data[i])
                let bound = tol * max(abs(a), abs(numeric), 0.1 * scale, 1e-6)
                XCTAssertLessThanOrEqual(abs(a - numeric), bound,
                                         "\(label)[\(i)]: analytic \(a), numeric \(numeric)", file: file, line: line)
            }
        }
    }
}

func randomTensor(_ shape: [Int], seed: UInt64, lo: Float = -1, hi: Float = 1) -> Tensor {
    var rng = RNG(seed: seed)
    let t = Tensor(zeros: shape)
    t.fillUniform(lo, hi, rng: &rng)
    return t
}

func randomize(_ params: [Parameter], seed: UInt64, scale: Float = 0.5) {
    var rng = RNG(seed: seed)
    for p in params { p.value.fillUniform(-scale, scale, rng: &rng) }
}
