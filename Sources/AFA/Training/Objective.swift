import Layers
import TensorCore

/// The loss values of one iteration (the golden `loss.*` keys).
public struct LossValues: Sendable {
    public var cls = 0.0
    public var seg = 0.0
    public var segBg = 0.0
    public var segFg = 0.0
    public var aff = 0.0
    public var total = 0.0
    /// Denominators of the affinity loss: counts of positive / negative targets plus one.
    public var affPosCount = 0
    public var affNegCount = 0
}

/// Targets of the three losses for one batch.
public struct LossTargets {
    /// Multi-hot image labels (B, numClasses − 1).
    public var clsLabel: Tensor
    /// Segmentation target at input resolution, B·H·W class ids (ignore = `ignoreIndex`).
    public var segLabel: [Int32]
    /// Affinity target on the stage-4 grid, B·N4·N4 values in {0, 1, ignore}.
    public var affLabel: [Int32]

    public init(clsLabel: Tensor, segLabel: [Int32], affLabel: [Int32]) {
        self.clsLabel = clsLabel; self.segLabel = segLabel; self.affLabel = affLabel
    }
}

extension AFAModel {
    /// Computes the losses of the main `forward` recorded in `ws` and runs the backward pass, accumulating
    /// parameter gradients in the workspace's store. While `nIter ≤ camIters` only the classification loss has weight; the
    /// decoder and AFA head then get zero gradients. The seg logits are upsampled bilinearly to the
    /// label's size before the cross entropy.
    @discardableResult
    public func lossAndBackward(_ out: AFAOutput, targets: LossTargets, nIter: Int, config: TrainConfig,
                                inputSize: (h: Int, w: Int), _ ws: Workspace) throws -> LossValues {
        var v = LossValues()
        let cls = try Losses.multilabelSoftMargin(logits: out.cls, target: targets.clsLabel)
        v.cls = cls.value

        let (sh, sw) = (out.seg.shape[2], out.seg.shape[3])
        let up = BilinearResize(inH: sh, inW: sw, outH: inputSize.h, outW: inputSize.w)
        let segUp = try up.forwardNCHW(out.seg)
        let seg = try Losses.segmentation(logits: segUp, label: targets.segLabel, ignoreIndex: Int32(config.ignoreIndex))
        v.seg = seg.loss.value; v.segBg = seg.bg; v.segFg = seg.fg

        let aff = try Losses.affinity(prediction: out.attnPred, target: targets.affLabel)
        v.aff = aff.loss.value; v.affPosCount = aff.posCount; v.affNegCount = aff.negCount

        let active = nIter > config.camIters
        let (wSeg, wAff): (Float, Float) = active ? (config.segWeight, config.affWeight) : (0, 0)
        v.total = v.cls + Double(wSeg) * v.seg + Double(wAff) * v.aff
        guard v.total.isFinite else {
            throw AFAError.nonFinite("loss at iteration \(nIter): cls \(v.cls), seg \(v.seg), aff \(v.aff)")
        }
        var dSeg: Tensor? = nil, dAff: Tensor? = nil
        if active {
            dSeg = try up.backwardNCHW(seg.loss.gradient.scaled(wSeg))
            dAff = aff.loss.gradient.scaled(wAff)
        }
        try backward(dCls: cls.gradient, dSeg: dSeg, dAttnPred: dAff, ws)
        return v
    }
}
