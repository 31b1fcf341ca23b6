import Foundation
import ImageIO
import SafeTensors
import TensorCore

/// A generated dataset in VOC layout, the embedded default: shape classes, each with its own colour
/// and texture, 1–3 objects per image on cluttered, textured backgrounds, exact masks and image-level
/// labels. Class appearance is fixed per class (independent of the seed), so datasets drawn with
/// different seeds share their classes.
public struct SyntheticDataset {
    public var trainCount = 400
    public var valCount = 100
    public var size = 96
    public var classes = 5
    public var seed: UInt64 = 0
    /// Objects per image: 1 … maxObjects, uniformly.
    public var maxObjects = 3
    /// Object radius as a fraction of the image side: smallest, and the span above it (uniform).
    public var minRadius: Float = 0.14
    public var radiusSpan: Float = 0.14
    /// Soft blobs and streaks on the background (false: only the smooth field and noise).
    public var clutter = true
    /// How close two objects' centres may come, in units of the sum of their radii: 0.7 lets them touch and
    /// overlap a little; smaller values let later objects hide much of earlier ones (occlusion).
    public var separation: Float = 0.7

    public init(trainCount: Int = 400, valCount: Int = 100, size: Int = 96, classes: Int = 5, seed: UInt64 = 0) {
        self.trainCount = trainCount; self.valCount = valCount; self.size = size; self.classes = classes; self.seed = seed
    }

    static let shapeNames = ["disc", "square", "triangle", "ring", "cross", "diamond", "bar", "star"]

    public var classNames: [String] {
        ["background"] + (0..<classes).map { k in
            let base = Self.shapeNames[k % Self.shapeNames.count]
            return k < Self.shapeNames.count ? base : "\(base)\(k / Self.shapeNames.count + 1)"
        }
    }

    /// Writes the dataset under `root` (created; existing files of the same names are replaced).
    public func write(to root: String) throws {
        guard classes >= 1, classes <= 254, size >= 32, trainCount >= 1, valCount >= 0 else {
            throw AFAError.invalidInput("synth: need 1…254 classes, size ≥ 32, at least one training image (got classes \(classes), size \(size), train \(trainCount))")
        }
        guard maxObjects >= 1, minRadius > 0.02, radiusSpan >= 0, minRadius + radiusSpan <= 0.5, separation >= 0 else {
            throw AFAError.invalidInput("synth: need at least one object per image and object radii within 0.02…0.5 of the image side (got \(maxObjects) objects, radius \(minRadius)+\(radiusSpan))")
        }
        let fm = FileManager.default
        for d in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
            try fm.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true)
        }
        var clsLines: [String] = []
        var lists: [String: [String]] = ["train": [], "val": []]
        let total = trainCount + valCount
        for i in 0..<total {
            let split = i < trainCount ? "train" : "val"
            let name = String(format: "%@_%05d", split, i)
            var rng = RNG(seed: seed &* 1_000_003 &+ UInt64(i) &+ 17)
            let (img, mask, present) = render(rng: &rng)
            try ImageCodec.writeJPEG(img, to: root + "/JPEGImages/\(name).jpg", quality: 95)
            try ImageCodec.writeLabelPNG(mask, to: root + "/SegmentationClass/\(name).png")
            clsLines.append(([name] + present.map(String.init)).joined(separator: " "))
            lists[split]!.append(name)
        }
        try write(clsLines.joined(separator: "\n") + "\n", to: root + "/cls_labels.txt")
        try write(classNames.joined(separator: "\n") + "\n", to: root + "/classes.txt")
        for (split, names) in lists { try write(names.joined(separator: "\n") + "\n", to: root + "/ImageSets/Segmentation/\(split).txt") }
    }

    func write(_ text: String, to path: String) throws { try AtomicFile.write(Data(text.utf8), to: path) }

    /// Colour (RGB 0…1) and texture parameters of class k (1-based), fixed.
    static func appearance(_ k: Int) -> (color: (Float, Float, Float), freq: Float, angle: Float, kind: Int) {
        var r = RNG(seed: UInt64(k) &* 7919 &+ 3)
        let hue = Float(k - 1) * 0.61803 - Float(Int(Float(k - 1) * 0.61803))
        let (cr, cg, cb) = hsv(hue, 0.75, 0.9)
        return ((cr, cg, cb), 0.25 + 0.5 * r.uniform(), r.uniform() * .pi, (k - 1) % 3)
    }

    static func hsv(_ h: Float, _ s: Float, _ v: Float) -> (Float, Float, Float) {
        let i = Int(h * 6) % 6, f = h * 6 - Float(Int(h * 6))
        let p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s)
        switch i {
        case 0: return (v, t, p)
        case 1: return (q, v, p)
        case 2: return (p, v, t)
        case 3: return (p, q, v)
        case 4: return (t, p, v)
        default: return (v, p, q)
        }
    }

    /// Whether (y, x) relative to the centre, in units of the radius, lies inside shape `kind`.
    static func inside(_ kind: Int, _ dy: Float, _ dx: Float) -> Bool {
        switch kind % shapeNames.count {
        case 0: return dx * dx + dy * dy <= 1
        case 1: return abs(dx) <= 0.85 && abs(dy) <= 0.85
        case 2: return dy <= 0.8 && dy >= -0.9 + 1.9 * abs(dx) / 1.0 - 0.0 && abs(dx) <= 1
        case 3: let r = dx * dx + dy * dy; return r <= 1 && r >= 0.3
        case 4: return (abs(dx) <= 0.33 && abs(dy) <= 1) || (abs(dy) <= 0.33 && abs(dx) <= 1)
        case 5: return abs(dx) + abs(dy) <= 1
        case 6: return abs(dx) <= 1 && abs(dy) <= 0.4
        default:
            let a = atan2(dy, dx), r = (dx * dx + dy * dy).squareRoot()
            return r <= 0.55 + 0.45 * abs(cos(2.5 * a))
        }
    }

    /// One image, its mask and its present classes (1-based, ascending).
    func render(rng: inout RNG) -> (RGBImage, LabelMap, [Int]) {
        let s = size
        var px = [Float](repeating: 0, count: s * s * 3)
        // background: a muted, smoothly varying field with clutter (soft blobs and streaks) and noise;
        // muted so that the classes' saturated colours and textures carry the signal
        let grey = 0.3 + 0.4 * rng.uniform()
        let base = (0..<3).map { _ in grey + 0.12 * (rng.uniform() - 0.5) }
        let fy = 1 + 3 * rng.uniform(), fx = 1 + 3 * rng.uniform(), ph = rng.uniform() * 6.28
        for y in 0..<s {
            for x in 0..<s {
                let w = 0.12 * sin(fx * Float(x) / Float(s) * 6.28 + ph) * cos(fy * Float(y) / Float(s) * 6.28)
                for c in 0..<3 { px[(y * s + x) * 3 + c] = base[c] + w * (c == 1 ? -0.5 : 1) }
            }
        }
        for _ in 0..<(clutter ? 3 + rng.int(below: 5) : 0) {
            let cy = rng.uniform() * Float(s), cx = rng.uniform() * Float(s), r = Float(s) * (0.04 + 0.12 * rng.uniform())
            let g = rng.uniform()
            let col = (0..<3).map { _ in 0.6 * g + 0.4 * rng.uniform() }
            let streak = rng.uniform() < 0.5
            for y in 0..<s {
                for x in 0..<s {
                    let dy = (Float(y) - cy) / r, dx = (Float(x) - cx) / (streak ? 3 * r : r)
                    if dx * dx + dy * dy < 1 { for c in 0..<3 { px[(y * s + x) * 3 + c] = 0.5 * px[(y * s + x) * 3 + c] + 0.5 * col[c] } }
                }
            }
        }
        var mask = [UInt8](repeating: 0, count: s * s)
        let n = 1 + rng.int(below: maxObjects)
        var placed: [(Float, Float, Float)] = []
        for _ in 0..<n {
            let k = 1 + rng.int(below: classes)
            let a = Self.appearance(k)
            let r = Float(s) * (minRadius + radiusSpan * rng.uniform())
            // by default objects may touch and overlap a little, never mostly hide each other
            var cy: Float = 0, cx: Float = 0
            for _ in 0..<20 {
                cy = r + rng.uniform() * (Float(s) - 2 * r); cx = r + rng.uniform() * (Float(s) - 2 * r)
                if placed.allSatisfy({ let d = (($0.0 - cy) * ($0.0 - cy) + ($0.1 - cx) * ($0.1 - cx)).squareRoot(); return d > separation * ($0.2 + r) }) { break }
            }
            placed.append((cy, cx, r))
            let rot = rng.uniform() * .pi
            let (cr, sr) = (cos(rot), sin(rot))
            let shade = 0.8 + 0.4 * rng.uniform()
            for y in 0..<s {
                for x in 0..<s {
                    let oy = (Float(y) - cy) / r, ox = (Float(x) - cx) / r
                    let dy = cr * oy - sr * ox, dx = sr * oy + cr * ox
                    guard Self.inside(k - 1, dy, dx) else { continue }
                    // class texture: stripes, checks or dots at the class's frequency and angle
                    let u = (cos(a.angle) * Float(x) + sin(a.angle) * Float(y)) * a.freq
                    let v = (-sin(a.angle) * Float(x) + cos(a.angle) * Float(y)) * a.freq
                    let t: Float
                    switch a.kind {
                    case 0: t = sin(u * 2)
                    case 1: t = sin(u * 1.5) * sin(v * 1.5) > 0 ? 1 : -1
                    default: t = cos(u * 2) * cos(v * 2) > 0.3 ? 1 : -0.4
                    }
                    let col = [a.color.0, a.color.1, a.color.2]
                    for c in 0..<3 { px[(y * s + x) * 3 + c] = shade * col[c] * (0.8 + 0.2 * t) }
                    mask[y * s + x] = UInt8(k)
                }
            }
        }
        var out = RGBImage(width: s, height: s)
        for i in 0..<(s * s * 3) {
            let v = px[i] + 0.04 * (rng.uniform() - 0.5) * 2
            out.pixels[i] = UInt8(min(max(v * 255, 0), 255))
        }
        var present = Set(mask.filter { $0 != 0 }.map(Int.init))
        // a class hidden by later objects is not present
        present = present.filter { k in mask.reduce(0) { $0 + ($1 == UInt8(k) ? 1 : 0) } >= 4 }
        for i in 0..<mask.count where mask[i] != 0 && !present.contains(Int(mask[i])) { mask[i] = 255 }
        return (out, LabelMap(width: s, height: s, values: mask), present.sorted())
    }
}
