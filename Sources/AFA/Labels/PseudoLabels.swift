import TensorCore

/// Label maps are B·H·W `Int32` class ids (row-major), `ignore` (255) where unknown.
public enum PseudoLabels {
    /// valid_cam = cams × cls_label, and the CAM label: argmax + 1 (ties → lowest class), 0 where the
    /// value ≤ bkg, `ignore` where ≤ high, 0 where ≤ low; `ignore` outside each image's box.
    public static func fromCAM(_ cams: Tensor, clsLabel: Tensor, boxes: [ImageBox], config: TrainConfig)
        -> (validCAM: Tensor, label: [Int32])
    {
        let (b, k, h, w) = (cams.shape[0], cams.shape[1], cams.shape[2], cams.shape[3])
        let plane = h * w
        let valid = Tensor(zeros: cams.shape)
        var label = [Int32](repeating: Int32(config.ignoreIndex), count: b * plane)
        let ignore = Int32(config.ignoreIndex)
        for i in 0..<b {
            for c in 0..<k {
                let y = clsLabel.data[i * k + c]
                let s = cams.data + (i * k + c) * plane, d = valid.data + (i * k + c) * plane
                for p in 0..<plane { d[p] = s[p] * y }
            }
            let box = boxes[i].clamped(height: h, width: w)
            for p in 0..<plane {
                var best: Float = -.infinity, idx = 0
                for c in 0..<k {
                    let v = valid.data[(i * k + c) * plane + p]
                    if v > best { best = v; idx = c }
                }
                var l = Int32(idx + 1)
                if best <= config.bkgScore { l = 0 }
                if best <= config.highThre { l = ignore }
                if best <= config.lowThre { l = 0 }
                label[i * plane + p] = box.contains(y: p / w, x: p % w) ? l : ignore
            }
        }
        return (valid, label)
    }

    /// The high label where it is foreground; 0 where high and low both say background; `ignore`
    /// where only high does.
    public static func combineHighLow(high: [Int32], low: [Int32], ignore: Int32) -> [Int32] {
        zip(high, low).map { h, l in h != 0 ? h : (l == 0 ? 0 : ignore) }
    }

    /// Sets every pixel outside each image's box to `ignore`.
    public static func ignoreOutsideBoxes(_ label: inout [Int32], boxes: [ImageBox], height h: Int, width w: Int, ignore: Int32) {
        for (i, box) in boxes.enumerated() {
            let bx = box.clamped(height: h, width: w)
            for p in 0..<(h * w) where !bx.contains(y: p / w, x: p % w) { label[i * h * w + p] = ignore }
        }
    }

    /// Background + present classes of image `i` as channel indices of a (C)-channel map.
    public static func presentKeys(_ clsLabel: Tensor, image i: Int) -> [Int] {
        let k = clsLabel.shape[1]
        return [0] + (0..<k).filter { clsLabel.data[i * k + $0] != 0 }.map { $0 + 1 }
    }
}
