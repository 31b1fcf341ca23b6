import Foundation
import TensorCore

/// The refined pseudo labels of one batch and the affinity target derived from them.
public struct RefinedLabels {
    /// From the CAMs with a constant background, refined by PAR (B·H·W).
    public var refinedPseudoLabel: [Int32]
    /// From the random-walk propagated CAMs, refined by PAR inside each box (B·H·W).
    public var refinedAffinityLabel: [Int32]
    /// Affinity target on the stage-4 grid of the input (B·N4·N4).
    public var affinityLabel: [Int32]

    public init(refinedPseudoLabel: [Int32], refinedAffinityLabel: [Int32], affinityLabel: [Int32]) {
        self.refinedPseudoLabel = refinedPseudoLabel
        self.refinedAffinityLabel = refinedAffinityLabel
        self.affinityLabel = affinityLabel
    }
}

/// How one step's targets divide the pixels and the affinity pairs: background, foreground and
/// ignored pixels of the PAR-refined pseudo label and of the affinity-refined label, and positive,
/// negative and unlabelled pairs of the affinity target (unlabelled: an end is ignored, or the pair
/// is outside the radius). Counts add over shards and log windows; `shares` gives the fractions
/// logged over a run (log.jsonl `labels`, TensorBoard `labels/…`), where a foreground that vanishes or
/// a target that is mostly "ignore" shows long before the mIoU does.
public struct LabelCounts: Sendable, Equatable {
    public var pseudo = (background: 0, foreground: 0, ignored: 0)
    public var refined = (background: 0, foreground: 0, ignored: 0)
    public var pairs = (positive: 0, negative: 0, unlabelled: 0)

    public init() {}

    public init(_ labels: RefinedLabels, ignore: Int32) {
        func split(_ l: [Int32]) -> (background: Int, foreground: Int, ignored: Int) {
            var bg = 0, ig = 0
            for v in l { if v == 0 { bg += 1 } else if v == ignore { ig += 1 } }
            return (bg, l.count - bg - ig, ig)
        }
        pseudo = split(labels.refinedPseudoLabel)
        refined = split(labels.refinedAffinityLabel)
        var pos = 0, neg = 0
        for v in labels.affinityLabel { if v == 1 { pos += 1 } else if v == 0 { neg += 1 } }
        pairs = (pos, neg, labels.affinityLabel.count - pos - neg)
    }

    /// The nine counts in a fixed order (summed across ranks with the losses).
    public var counts: [Int] {
        [pseudo.background, pseudo.foreground, pseudo.ignored, refined.background, refined.foreground, refined.ignored,
         pairs.positive, pairs.negative, pairs.unlabelled]
    }

    public init(counts c: [Int]) {
        precondition(c.count == 9, "LabelCounts: 9 counts")
        pseudo = (c[0], c[1], c[2]); refined = (c[3], c[4], c[5]); pairs = (c[6], c[7], c[8])
    }

    public static func + (a: LabelCounts, b: LabelCounts) -> LabelCounts {
        LabelCounts(counts: zip(a.counts, b.counts).map { $0 + $1 })
    }

    public static func == (a: LabelCounts, b: LabelCounts) -> Bool { a.counts == b.counts }

    public var shares: LabelShares {
        func f(_ x: Int, _ n: Int) -> Double { n > 0 ? Double(x) / Double(n) : 0 }
        let np = pseudo.background + pseudo.foreground + pseudo.ignored
        let nr = refined.background + refined.foreground + refined.ignored
        let labelled = pairs.positive + pairs.negative
        return LabelShares(pseudoBackground: f(pseudo.background, np), pseudoForeground: f(pseudo.foreground, np),
                           pseudoIgnored: f(pseudo.ignored, np), refinedBackground: f(refined.background, nr),
                           refinedForeground: f(refined.foreground, nr), refinedIgnored: f(refined.ignored, nr),
                           pairsLabelled: f(labelled, labelled + pairs.unlabelled), pairsPositive: f(pairs.positive, labelled))
    }
}

/// `LabelCounts` as fractions: of the pixels for the two label maps; of all pairs for `pairsLabelled`,
/// of the labelled pairs for `pairsPositive`.
public struct LabelShares: Codable, Sendable, Equatable {
    public var pseudoBackground: Double, pseudoForeground: Double, pseudoIgnored: Double
    public var refinedBackground: Double, refinedForeground: Double, refinedIgnored: Double
    public var pairsLabelled: Double, pairsPositive: Double

    enum CodingKeys: String, CodingKey {
        case pseudoBackground = "pseudo_bg", pseudoForeground = "pseudo_fg", pseudoIgnored = "pseudo_ignored"
        case refinedBackground = "refined_bg", refinedForeground = "refined_fg", refinedIgnored = "refined_ignored"
        case pairsLabelled = "pairs_labelled", pairsPositive = "pairs_positive"
    }

    /// (TensorBoard tag, value) pairs, `labels/<json key>`.
    public var scalars: [(String, Double)] {
        [("pseudo_bg", pseudoBackground), ("pseudo_fg", pseudoForeground), ("pseudo_ignored", pseudoIgnored),
         ("refined_bg", refinedBackground), ("refined_fg", refinedForeground), ("refined_ignored", refinedIgnored),
         ("pairs_labelled", pairsLabelled), ("pairs_positive", pairsPositive)].map { ("labels/" + $0.0, $0.1) }
    }
}

/// Turns fused CAMs into training targets: PAR-refined pseudo labels, random-walk propagation and
/// the affinity labels (DESIGN.md §5 steps 3–7).
public struct LabelRefinement {
    public var config: TrainConfig
    public var par: PAR
    /// Patch-embed strides of the model, for the stage-4 grid of the largest CAM scale.
    public var strides: [Int]
    /// Time spent in PAR and in the random walk, accumulated (seconds).
    public let clock = PhaseClock()

    public init(config: TrainConfig, strides: [Int] = ModelConfig.methodStrides) {
        self.config = config
        self.strides = strides
        par = PAR(config: config)
    }

    var ignore: Int32 { Int32(config.ignoreIndex) }

    /// Everything from the fused CAMs to the three labels. `images`: normalised (B, 3, H, W);
    /// `affinity`: the largest scale's `attn_pred` (≥ B, N', N').
    public func labels(images: Tensor, cam: MultiScaleCAM, clsLabel: Tensor, boxes: [ImageBox],
                       recorder: Recorder? = nil) throws -> RefinedLabels {
        let (b, h, w) = (images.shape[0], images.shape[2], images.shape[3])
        let unit = ImageOps.denormalizeToUnit(images)
        let down = config.downScale
        recorder?.add("par.image_half", try ImageOps.resize(unit, height: h / down, width: w / down))
        let (valid, camLabel) = PseudoLabels.fromCAM(cam.cams, clsLabel: clsLabel, boxes: boxes, config: config)
        recorder?.add("cam.pseudo_label", shape: [b, h, w], camLabel)

        let affLabels = try propagatedLabels(unit: unit, validCAM: valid, affinity: cam.affinity, clsLabel: clsLabel,
                                             boxes: boxes, recorder: recorder)
        let pseudo = try refinedPseudoLabel(unit: unit, cams: cam.cams, clsLabel: clsLabel, boxes: boxes, recorder: recorder)
        // The token grid of the crop's own forward, whose attention these labels supervise: h/16 × w/16
        // for the method's strides and a crop divisible by 16, rounded up for other crops (the patch
        // embeddings pad: 7 × 7 tokens at crop 100), finer for a model with smaller strides.
        let grid = ImageOps.stage4Grid(height: h, width: w, strides: strides)
        let mask = RandomWalk.radiusMask(height: grid.h, width: grid.w, radius: config.radius)
        let affLabel = RandomWalk.affinityLabel(labels: pseudo, batch: b, height: h, width: w, grid: grid, mask: mask,
                                                ignore: ignore, sampling: config.affLabelSampling)
        recorder?.add("label.aff_label", shape: [b, grid.h * grid.w, grid.h * grid.w], affLabel)
        return RefinedLabels(refinedPseudoLabel: pseudo, refinedAffinityLabel: affLabels, affinityLabel: affLabel)
    }

    /// Step 5: per image, [constant background; present-class CAMs] at 1/downScale, softmax over those
    /// channels, PAR, back to full size, argmax → class id; high/low backgrounds combined; `ignore`
    /// outside the box.
    public func refinedPseudoLabel(unit: Tensor, cams: Tensor, clsLabel: Tensor, boxes: [ImageBox],
                                   recorder: Recorder? = nil) throws -> [Int32] {
        let (b, k, h, w) = (cams.shape[0], cams.shape[1], cams.shape[2], cams.shape[3])
        let (hs, ws) = (h / config.downScale, w / config.downScale)
        let small = try ImageOps.resize(unit, height: hs, width: ws)
        let camsSmall = try ImageOps.resize(cams, height: hs, width: ws)
        var results: [String: [Int32]] = [:]
        for (tag, score) in [("bkg_h", config.highThre), ("bkg_l", config.lowThre)] {
            // The constant channel goes through the same resize as the CAMs (bit-exact with the reference).
            let constant = try ImageOps.resize(Tensor(shape: [1, 1, h, w], repeating: score), height: hs, width: ws)
            var lab = [Int32](repeating: ignore, count: b * h * w)
            for i in 0..<b {
                let keys = PseudoLabels.presentKeys(clsLabel, image: i)
                let probs = Tensor(zeros: [keys.count, hs, ws])
                let n = hs * ws
                for p in 0..<n {
                    var vals = keys.map { $0 == 0 ? constant.data[p] : camsSmall.data[(i * k + $0 - 1) * n + p] }
                    softmaxInPlace(&vals)
                    for r in 0..<keys.count { probs.data[r * n + p] = vals[r] }
                }
                let refined = try clock.time(\.par) { try par.refine(image: small.data + i * 3 * n, height: hs, width: ws, masks: probs) }
                recorder?.add("par.\(tag).\(i)", try refined.reshaped([1, keys.count, hs, ws]))
                let up = try ImageOps.resize(try refined.reshaped([1, keys.count, hs, ws]), height: h, width: w)
                let box = boxes[i].clamped(height: h, width: w)
                for y in box.h0..<box.h1 {
                    for x in box.w0..<box.w1 {
                        lab[(i * h + y) * w + x] = Int32(keys[argmax(up.data + y * w + x, count: keys.count, stride: h * w)])
                    }
                }
            }
            results[tag] = lab
            recorder?.add("label.\(tag == "bkg_h" ? "bkg_label_h" : "bkg_label_l")", shape: [b, h, w], lab)
        }
        let combined = PseudoLabels.combineHighLow(high: results["bkg_h"]!, low: results["bkg_l"]!, ignore: ignore)
        recorder?.add("label.refined_pseudo_label", shape: [b, h, w], combined)
        return combined
    }

    /// Step 6: valid CAMs on the largest scale's stage-4 grid, random walk with both background scores,
    /// back to full size, PAR inside each box at half resolution, argmax over all channels; high/low
    /// combined; `ignore` outside the box.
    public func propagatedLabels(unit: Tensor, validCAM: Tensor, affinity: Tensor, clsLabel: Tensor,
                                 boxes: [ImageBox], recorder: Recorder? = nil) throws -> [Int32] {
        let (b, h, w) = (validCAM.shape[0], validCAM.shape[2], validCAM.shape[3])
        let maxScale = config.scales.max()!
        let grid = ImageOps.stage4Grid(height: Int(maxScale * Double(h)), width: Int(maxScale * Double(w)),
                                       strides: strides)
        guard affinity.shape[1] == grid.h * grid.w else {
            throw TensorError.shapeMismatch(operation: "random walk: affinity of the largest scale vs its stage-4 grid \(grid)",
                                            lhs: affinity.shape, rhs: [2 * b, grid.h * grid.w, grid.h * grid.w])
        }
        let validSmall = try ImageOps.resize(validCAM, height: grid.h, width: grid.w)
        let mask = RandomWalk.radiusMask(height: grid.h, width: grid.w, radius: config.radius)
        recorder?.add("rw.valid_cam_resized", validSmall)
        recorder?.add("rw.mask_infer", shape: [grid.h * grid.w, grid.h * grid.w], mask)
        var labels: [String: [Int32]] = [:]
        for (tag, score) in [("l", config.lowThre), ("h", config.highThre)] {
            let prop = try clock.time(\.randomWalk) {
                try RandomWalk.propagate(cams: validSmall, aff: affinity, mask: mask, clsLabel: clsLabel,
                                         backgroundScore: score, normEps: config.rwNormEps)
            }
            recorder?.add("rw.aff_cam_\(tag)", prop)
            let up = try ImageOps.resize(prop, height: h, width: w)
            let refined = try refineInBoxes(unit: unit, maps: up, clsLabel: clsLabel, boxes: boxes, recorder: recorder, tag: "aff_\(tag)")
            let c = refined.shape[1], plane = h * w
            var lab = [Int32](repeating: 0, count: b * plane)
            for i in 0..<b {
                for p in 0..<plane { lab[i * plane + p] = Int32(argmax(refined.data + i * c * plane + p, count: c, stride: plane)) }
            }
            recorder?.add("label.aff_cam_label_\(tag)", shape: [b, h, w], lab)
            labels[tag] = lab
        }
        var combined = PseudoLabels.combineHighLow(high: labels["h"]!, low: labels["l"]!, ignore: ignore)
        PseudoLabels.ignoreOutsideBoxes(&combined, boxes: boxes, height: h, width: w, ignore: ignore)
        recorder?.add("label.refined_aff_label", shape: [b, h, w], combined)
        return combined
    }

    /// PAR inside each image's box at half resolution on maps (B, C, H, W) that include background;
    /// returns (B, C, H, W), zero outside the box and for absent classes.
    func refineInBoxes(unit: Tensor, maps: Tensor, clsLabel: Tensor, boxes: [ImageBox], recorder: Recorder?, tag: String) throws -> Tensor {
        let (b, c, h, w) = (maps.shape[0], maps.shape[1], maps.shape[2], maps.shape[3])
        let out = Tensor(zeros: maps.shape)
        for i in 0..<b {
            let box = boxes[i].clamped(height: h, width: w)
            let (bh, bw) = (box.height, box.width)
            guard bh / 2 >= 1, bw / 2 >= 1 else { continue }   // nothing to refine in a (near-)empty box
            let crop = Tensor(zeros: [1, 3, bh, bw])
            for ch in 0..<3 {
                for y in 0..<bh {
                    (crop.data + (ch * bh + y) * bw).update(from: unit.data + ((i * 3 + ch) * h + box.h0 + y) * w + box.w0, count: bw)
                }
            }
            let small = try ImageOps.resize(crop, height: bh / 2, width: bw / 2)
            let keys = PseudoLabels.presentKeys(clsLabel, image: i)
            let masks = Tensor(zeros: [keys.count, bh, bw])
            for (r, key) in keys.enumerated() {
                for y in 0..<bh {
                    (masks.data + (r * bh + y) * bw).update(from: maps.data + ((i * c + key) * h + box.h0 + y) * w + box.w0, count: bw)
                }
            }
            let refined = try clock.time(\.par) { try par.refine(image: small.data, height: bh / 2, width: bw / 2, masks: masks) }
            recorder?.add("par.\(tag).\(i)", try refined.reshaped([1, keys.count, bh / 2, bw / 2]))
            let up = try ImageOps.resize(try refined.reshaped([1, keys.count, bh / 2, bw / 2]), height: bh, width: bw)
            for (r, key) in keys.enumerated() {
                for y in 0..<bh {
                    (out.data + ((i * c + key) * h + box.h0 + y) * w + box.w0).update(from: up.data + (r * bh + y) * bw, count: bw)
                }
            }
        }
        return out
    }
}

/// Index of the largest of `count` values spaced `stride` apart; ties resolve to the lowest index.
@inline(__always) func argmax(_ p: UnsafePointer<Float>, count: Int, stride: Int) -> Int {
    var best = p[0], idx = 0
    for j in 1..<max(count, 1) where p[j * stride] > best { best = p[j * stride]; idx = j }
    return idx
}

/// Numerically stable softmax of a short vector.
@inline(__always) func softmaxInPlace(_ v: inout [Float]) {
    let m = v.max() ?? 0
    var z: Float = 0
    for i in v.indices { v[i] = (v[i] - m).exp(); z += v[i] }
    for i in v.indices { v[i] /= z }
}

extension Float {
    @inline(__always) func exp() -> Float { Foundation.exp(self) }
}

/// Accumulates wall time per phase of the label refinement.
public final class PhaseClock: @unchecked Sendable {
    public var par = 0.0
    public var randomWalk = 0.0

    public init() {}

    public func reset() { par = 0; randomWalk = 0 }

    func time<T>(_ field: ReferenceWritableKeyPath<PhaseClock, Double>, _ body: () throws -> T) rethrows -> T {
        let start = Date()
        defer { self[keyPath: field] += Date().timeIntervalSince(start) }
        return try body()
    }
}
