import Foundation
import Layers

/// The pictures that explain a run at one point of training: for a few validation images, one row of
/// tiles — the input, the fused CAM of each class the image holds (heat map over the input), the
/// PAR-refined pseudo label, the affinity label (random walk, refined), the segmentation and the ground
/// truth — as the training step would derive them for that image at crop size, unaugmented.
public enum RunPictures {
    /// Tiles are at most this many pixels a side.
    public static let maxTile = 128

    /// What each tile of a row shows, in order (the CAM tiles repeat per present class).
    public static let legend = ["input", "CAM per present class", "pseudo label (PAR)", "affinity label", "segmentation", "ground truth"]

    /// One row per image in `indices` of `dataset` (which needs masks), stacked; the CAM tiles of a
    /// row with fewer classes are followed by black ones, so the label columns line up.
    public static func grid(model: AFAModel, recipe: TrainRecipe, classNames: [String], dataset: VOCDataset, indices: [Int]) throws -> RGBImage {
        let c = recipe.cropSize
        let refinement = LabelRefinement(config: recipe.train, strides: model.config.strides)
        let segmenter = Segmenter(model: model, recipe: recipe, classNames: classNames)
        var rows: [(cams: [RGBImage], labels: [RGBImage])] = []
        for i in indices {
            let image = Augmentation.resize(try ImageCodec.readRGB(dataset.imagePath(i)), width: c, height: c)
            let x = Augmentation.normalized(image)
            let present = dataset.multiHot(i)
            let k = present.count
            let cls = try Tensor(shape: [1, k], values: present)
            let cam = try model.multiScaleCAM(x, scales: recipe.train.scales, Workspace.inference())
            let labels = try refinement.labels(images: x, cam: cam, clsLabel: cls, boxes: [.full(height: c, width: c)])
            var cams = [image], tiles: [RGBImage] = []
            for q in 0..<k where present[q] != 0 {
                cams.append(Visualization.heatmap(image, map: cam.cams.data + q * c * c))
            }
            tiles.append(colored(labels.refinedPseudoLabel.map { Int($0) }, width: c, height: c))
            tiles.append(colored(labels.refinedAffinityLabel.map { Int($0) }, width: c, height: c))
            tiles.append(colored(try segmenter.segment(image, options: SegmentationOptions(flip: false)).labels.values.map { Int($0) }, width: c, height: c))
            if let mask = dataset.maskPath(i) {
                tiles.append(colored(nearest(try ImageCodec.readLabels(mask), width: c, height: c), width: c, height: c))
            }
            let small = { (t: RGBImage) in t.width > maxTile ? Augmentation.resize(t, width: maxTile, height: maxTile) : t }
            rows.append((cams.map(small), tiles.map(small)))
        }
        let tile = min(c, maxTile), camColumns = rows.map(\.cams.count).max() ?? 0
        let blank = RGBImage(width: tile, height: tile)
        let padded = rows.map { $0.cams + Array(repeating: blank, count: camColumns - $0.cams.count) + $0.labels }
        let columns = padded.map(\.count).max() ?? 0
        var out = RGBImage(width: max(columns * tile, 1), height: max(rows.count * tile, 1))
        for (r, row) in padded.enumerated() {
            for (col, t) in row.enumerated() {
                for y in 0..<tile {
                    let dst = ((r * tile + y) * out.width + col * tile) * 3
                    out.pixels.replaceSubrange(dst..<(dst + tile * 3), with: t.pixels[(y * tile * 3)..<((y + 1) * tile * 3)])
                }
            }
        }
        return out
    }

    /// Class indices in the VOC colours; 255 (ignore) white.
    static func colored(_ labels: [Int], width: Int, height: Int) -> RGBImage {
        var out = RGBImage(width: width, height: height)
        for p in 0..<(width * height) {
            let (r, g, b) = labels[p] == 255 || labels[p] < 0 ? (255, 255, 255) : VOCPalette.color(labels[p])
            out.pixels[3 * p] = r; out.pixels[3 * p + 1] = g; out.pixels[3 * p + 2] = b
        }
        return out
    }

    /// A label map resized by nearest neighbour.
    static func nearest(_ m: LabelMap, width: Int, height: Int) -> [Int] {
        (0..<(width * height)).map { p in
            let (y, x) = (p / width, p % width)
            return Int(m.values[min(m.height - 1, y * m.height / height) * m.width + min(m.width - 1, x * m.width / width)])
        }
    }
}
