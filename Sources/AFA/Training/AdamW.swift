import Foundation
import Layers
import SafeTensors
import TensorCore

/// AdamW (decoupled weight decay, bias-corrected moments) over parameter groups whose learning rate
/// follows a linear warm-up then a poly decay, stepped once per iteration.
///
/// Per parameter: p ← p·(1 − lr·wd); m ← m + (1 − β1)(g − m); v ← β2·v + (1 − β2)·g²;
/// p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps).
public final class PolyWarmupAdamW {
    public struct Group {
        public var name: String
        public var parameters: [Parameter]
        public var baseLR: Double
        public var lr: Double
        public var weightDecay: Double
    }

    /// Adam moments of one parameter.
    public final class State {
        public var step = 0
        public let expAvg: Tensor
        public let expAvgSq: Tensor
        init(shape: [Int]) { expAvg = Tensor(zeros: shape); expAvgSq = Tensor(zeros: shape) }
    }

    public var groups: [Group]
    public var state: [String: State] = [:]
    /// Iterations stepped so far; the next step uses the multiplier of this value.
    public var globalStep: Int
    public let config: TrainConfig

    public init(groups: [Group], config: TrainConfig, globalStep: Int = 0) {
        self.groups = groups; self.config = config; self.globalStep = globalStep
    }

    /// The method's four groups: backbone (lr, wd); backbone norms (frozen: lr 0, wd 0); classifier and
    /// AFA head (10·lr, wd); decoder (10·lr, wd). Trainable norms (`trainNorms`, the tiny recipe) get the
    /// backbone lr and still no weight decay: decay would pull every LayerNorm gain towards zero, and
    /// the reference trainer does not decay them either.
    public convenience init(model: AFAModel, config: TrainConfig, globalStep: Int = 0, trainNorms: Bool = false) {
        let enc = model.encoder.parameters
        let isNorm = { (p: Parameter) in p.name.dropFirst("encoder.".count).contains("norm") }
        let lr = config.lr, wd = config.weightDecay
        let groups = [
            Group(name: "backbone", parameters: enc.filter { !isNorm($0) }, baseLR: lr, lr: lr, weightDecay: wd),
            Group(name: "backbone_norm", parameters: enc.filter(isNorm), baseLR: trainNorms ? lr : 0, lr: trainNorms ? lr : 0,
                  weightDecay: 0),
            Group(name: "cls_and_afa_head", parameters: model.classifier.parameters + model.affinityHead.parameters,
                  baseLR: 10 * lr, lr: 10 * lr, weightDecay: wd),
            Group(name: "decoder", parameters: model.decoder.parameters, baseLR: 10 * lr, lr: 10 * lr, weightDecay: wd),
        ]
        self.init(groups: groups, config: config, globalStep: globalStep)
    }

    /// The lr multiplier at `step`: 1 − (1 − step/warmup)(1 − ratio) during warm-up, then
    /// (1 − step/max)^power; nil from `maxIters` on (the lr is then left as it was).
    public static func lrMultiplier(step: Int, config: TrainConfig) -> Double? {
        if step < config.warmupIters {
            return 1 - (1 - Double(step) / Double(config.warmupIters)) * (1 - config.warmupRatio)
        }
        if step < config.maxIters { return Foundation.pow(1 - Double(step) / Double(config.maxIters), config.power) }
        return nil
    }

    /// One update of every parameter from its gradient in `gradients`; returns the lr of each group used.
    @discardableResult
    public func step(_ gradients: Gradients) -> [Double] {
        if let mult = Self.lrMultiplier(step: globalStep, config: config) {
            for g in groups.indices { groups[g].lr = groups[g].baseLR * mult }
        }
        let (b1, b2, eps) = (config.betas[0], config.betas[1], config.adamEps)
        for g in groups {
            let decay = Float(1 - g.lr * g.weightDecay)
            for p in g.parameters {
                let st = state[p.name] ?? State(shape: p.shape)
                state[p.name] = st
                st.step += 1
                let t = Double(st.step)
                let stepSize = Float(g.lr / (1 - Foundation.pow(b1, t)))
                let bias2 = Float(Foundation.pow(1 - Foundation.pow(b2, t), 0.5))
                let w1 = Float(1 - b1), w2 = Float(1 - b2), beta2 = Float(b2), e = Float(eps)
                let x = p.value.data, gr = gradients[p].data, m = st.expAvg.data, v = st.expAvgSq.data
                let applyDecay = g.weightDecay != 0
                Parallel.forChunks(p.value.count, grain: 1 << 14) { r in
                    for i in r {
                        if applyDecay { x[i] *= decay }
                        let gi = gr[i]
                        // fused multiply-add, as PyTorch's vectorised lerp computes it
                        m[i] = m[i].addingProduct(w1, gi - m[i])
                        v[i] = v[i] * beta2 + w2 * gi * gi
                        let denom = v[i].squareRoot() / bias2 + e
                        x[i] += -stepSize * (m[i] / denom)
                    }
                }
            }
        }
        globalStep += 1
        return groups.map(\.lr)
    }

    // MARK: Checkpointing

    /// Writes the moments (`optimizer.<param>.exp_avg|exp_avg_sq|step`) and the global step.
    public func save(into w: inout SafeTensorsWriter) {
        for (name, st) in state {
            w.add("optimizer.\(name).exp_avg", st.expAvg)
            w.add("optimizer.\(name).exp_avg_sq", st.expAvgSq)
            w.addInt64("optimizer.\(name).step", shape: [], [Int64(st.step)])
        }
        w.addInt64("optimizer.global_step", shape: [], [Int64(globalStep)])
        w.addFloat64("optimizer.group_lr", shape: [groups.count], groups.map(\.lr))
    }

    /// Restores what `save` wrote; every parameter state must match its parameter's shape.
    public func load(from f: SafeTensorsFile) throws {
        globalStep = try f.integers("optimizer.global_step")[0]
        let all = groups.flatMap(\.parameters)
        state = [:]
        for p in all where f.contains("optimizer.\(p.name).exp_avg") {
            let st = State(shape: p.shape)
            let m = try f.tensor("optimizer.\(p.name).exp_avg"), v = try f.tensor("optimizer.\(p.name).exp_avg_sq")
            guard m.shape == p.shape, v.shape == p.shape else {
                throw StateDictError(source: f.path, misshaped: [("optimizer.\(p.name).exp_avg", m.shape, p.shape)])
            }
            try st.expAvg.assign(from: m); try st.expAvgSq.assign(from: v)
            st.step = try f.integers("optimizer.\(p.name).step")[0]
            state[p.name] = st
        }
        if f.contains("optimizer.group_lr") {
            let lrs = try f.doubles("optimizer.group_lr")
            for i in groups.indices where i < lrs.count { groups[i].lr = lrs[i] }
        }
    }
}
