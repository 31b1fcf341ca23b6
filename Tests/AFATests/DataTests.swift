import AFA
import Foundation
import XCTest

final class DataTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "afa-data-\(UUID().uuidString)"
        try SyntheticDataset(trainCount: 6, valCount: 2, size: 48, classes: 3, seed: 4).write(to: dir)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testSyntheticDatasetParses() throws {
        let ds = try VOCDataset(root: dir, split: "train", requireMasks: true)
        XCTAssertEqual(ds.count, 6)
        XCTAssertEqual(ds.classNames, ["background", "disc", "square", "triangle"])
        XCTAssertTrue(ds.imageLabels.contains { !$0.isEmpty })
    }

    func testLabelsDerivedFromMasksMatchClsLabels() throws {
        let withFile = try VOCDataset(root: dir, split: "train", requireMasks: true)
        try FileManager.default.removeItem(atPath: dir + "/cls_labels.txt")
        let derived = try VOCDataset(root: dir, split: "train", requireMasks: false)
        XCTAssertEqual(derived.imageLabels, withFile.imageLabels)
    }

    func testMissingImageAndBadLabelValueAreReportedTogether() throws {
        let ds = try VOCDataset(root: dir, split: "train", requireMasks: true)
        try FileManager.default.removeItem(atPath: ds.imagePath(0))
        let m = try ImageCodec.readLabels(ds.maskPath(1)!)
        var bad = m; bad.values[0] = 9
        try ImageCodec.writeLabelPNG(bad, to: ds.maskPath(1)!)
        XCTAssertThrowsError(try VOCDataset(root: dir, split: "train", requireMasks: true)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains(ds.imagePath(0)), text)
            XCTAssertTrue(text.contains(ds.maskPath(1)!) && text.contains("[9]"), text)
        }
    }

    func testUnknownClassInClsLabelsIsReported() throws {
        try "train_00000 1 7\n".write(toFile: dir + "/cls_labels.txt", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try VOCDataset(root: dir, split: "train", requireMasks: false)) { e in
            XCTAssertTrue("\(e)".contains("'7'"), "\(e)")
            XCTAssertTrue("\(e)".contains("no line for image train_00001"), "\(e)")
        }
    }

    func testAugmentationKeepsImageAndBoxConsistent() throws {
        var img = RGBImage(width: 30, height: 20)
        for i in img.pixels.indices { img.pixels[i] = 255 }
        let aug = Augmentation(cropSize: 48)
        let c = 48
        let out = UnsafeMutablePointer<Float>.allocate(capacity: 3 * c * c)
        defer { out.deallocate() }
        for seed in 0..<20 {
            var rng = RNG(seed: UInt64(seed))
            let box = aug.apply(img, rng: &rng, into: out)
            XCTAssertTrue(box.height > 0 && box.width > 0)
            for ch in 0..<3 {
                let white = (255 - ImageOps.mean[ch]) / ImageOps.std[ch], pad = -ImageOps.mean[ch] / ImageOps.std[ch]
                for y in 0..<c { for x in 0..<c {
                    let v = out[ch * c * c + y * c + x]
                    XCTAssertEqual(v, box.contains(y: y, x: x) ? white : pad, accuracy: 1e-5, "seed \(seed) (\(y), \(x)) box \(box)")
                } }
            }
        }
    }

    /// The reference trainer's protocol scores the segmentation exactly as the single-scale protocol does
    /// and takes its CAMs from the training step's multi-scale pass, so those rows differ.
    func testReferenceProtocolSharesTheSegmentationRowAndNotTheCAMs() throws {
        let ds = try VOCDataset(root: dir, split: "val", requireMasks: true)
        let recipe = try TrainRecipe.defaults(preset: "tiny", numClasses: ds.numClasses, iterations: 10)
        let model = try AFAModel(config: recipe.model)
        model.initialize(seed: 3, linearStd: 0.2)
        let seg = Segmenter(model: model, recipe: recipe, classNames: ds.classNames)
        let single = try Evaluator(scales: [1], flip: false).evaluate(seg, dataset: ds)
        let reference = try Evaluator(camSource: .training).evaluate(seg, dataset: ds)
        XCTAssertEqual(reference.segMIoU, single.segMIoU)
        XCTAssertEqual(reference.perClassIoU["seg"]!.map { $0 ?? -1 }, single.perClassIoU["seg"]!.map { $0 ?? -1 })
        XCTAssertNotEqual(reference.perClassIoU["cam"]!.map { $0 ?? -1 }, single.perClassIoU["cam"]!.map { $0 ?? -1 })
        for v in [reference.camMIoU, reference.affMIoU] { XCTAssertTrue((0...1).contains(v)) }
    }

    func testMeanIoUOnHandMadeConfusionMatrix() {
        var cm = ConfusionMatrix(classes: 3)
        // truth 0: 3 px (2 right, 1 → 1); truth 1: 2 px (1 right, 1 → 0); class 2 absent everywhere
        cm.add(truth: [0, 0, 0, 1, 1, 255], prediction: [0, 0, 1, 1, 0, 2])
        let iou = cm.iou
        XCTAssertEqual(iou[0]!, 2.0 / 4.0, accuracy: 1e-12)
        XCTAssertEqual(iou[1]!, 1.0 / 3.0, accuracy: 1e-12)
        XCTAssertNil(iou[2])
        XCTAssertEqual(cm.meanIoU, (0.5 + 1.0 / 3.0) / 2, accuracy: 1e-12)
        XCTAssertEqual(cm.pixelAccuracy, 3.0 / 5.0, accuracy: 1e-12)
    }
}
