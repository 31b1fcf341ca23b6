import AFA
import FuzzDriver
import Foundation

/// The dataset's text files: the input is split at its first two NUL bytes into `classes.txt`, the
/// split list and `cls_labels.txt`, written into a VOC-layout folder with one small image and mask per
/// listed name (at most 8), then opened as a dataset.
fuzzMain { data in
    let parts = data.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3 else { return }
    let root = NSTemporaryDirectory() + "afa-fuzz-dataset-\(getpid())"
    let fm = FileManager.default
    let jpeg = try! ImageCodec.encodeJPEG(RGBImage(width: 8, height: 8))
    let mask = try! ImageCodec.encodeLabelPNG(LabelMap(width: 8, height: 8, values: [UInt8](repeating: 1, count: 64)))
    try? fm.removeItem(atPath: root)
    for d in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        try? fm.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true)
    }
    fm.createFile(atPath: root + "/classes.txt", contents: Data(parts[0]))
    fm.createFile(atPath: root + "/ImageSets/Segmentation/train.txt", contents: Data(parts[1]))
    fm.createFile(atPath: root + "/cls_labels.txt", contents: Data(parts[2]))
    let names = String(decoding: parts[1], as: UTF8.self).split(whereSeparator: \.isNewline).prefix(8)
    for n in names {
        let name = n.split(separator: " ").first.map(String.init) ?? ""
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else { continue }
        fm.createFile(atPath: root + "/JPEGImages/\(name).jpg", contents: jpeg)
        fm.createFile(atPath: root + "/SegmentationClass/\(name).png", contents: mask)
    }
    _ = try? VOCDataset(root: root, split: "train", requireMasks: false)
}
