import Foundation
import ImageIO

/// Problems found while opening a dataset; all of them are collected and reported together.
public struct DatasetError: Error, CustomStringConvertible, LocalizedError {
    public var root: String
    public var problems: [String]
    public var description: String {
        let shown = problems.prefix(50).map { "  - " + $0 }.joined(separator: "\n")
        let more = problems.count > 50 ? "\n  … and \(problems.count - 50) more" : ""
        return "dataset \(root): \(problems.count) problem(s)\n" + shown + more
    }
    public var errorDescription: String? { description }
}

/// A dataset in PASCAL VOC layout: `JPEGImages/<name>.jpg`, masks in `SegmentationClassAug/` or
/// `SegmentationClass/` (`<name>.png`, 255 = ignore), split lists `ImageSets/Segmentation/<split>.txt`,
/// image-level labels from `cls_labels.txt` (`name k k …`, 1-based foreground classes) or derived from
/// the masks, class names from `classes.txt` (background first) or the 21 VOC names.
public struct VOCDataset: Sendable {
    public static let vocClassNames = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
                                       "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
                                       "sheep", "sofa", "train", "tvmonitor"]

    public let root: String
    public let split: String
    public let names: [String]
    /// Class names, background first.
    public let classNames: [String]
    /// Per image: present foreground classes as 1-based class ids.
    public let imageLabels: [[Int]]
    /// The mask folder in use, nil when the dataset has none.
    public let maskDirectory: String?

    public var numClasses: Int { classNames.count }
    public var count: Int { names.count }

    public func imagePath(_ i: Int) -> String { root + "/JPEGImages/" + names[i] + ".jpg" }
    public func maskPath(_ i: Int) -> String? { maskDirectory.map { $0 + "/" + names[i] + ".png" } }

    /// Multi-hot foreground labels of image i (numClasses − 1 values).
    public func multiHot(_ i: Int) -> [Float] {
        var v = [Float](repeating: 0, count: numClasses - 1)
        for k in imageLabels[i] { v[k - 1] = 1 }
        return v
    }

    /// Opens and validates the split: every image exists, every label line names a listed image with
    /// classes in range, every mask exists and holds values < numClasses or 255 (masks are read when
    /// `requireMasks` or when labels must be derived from them).
    public init(root: String, split: String, splitFile: String? = nil, requireMasks: Bool) throws {
        let fm = FileManager.default
        var problems: [String] = []
        self.root = root
        self.split = split
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw DatasetError(root: root, problems: ["no such directory"])
        }
        // class names
        let classesFile = root + "/classes.txt"
        if fm.fileExists(atPath: classesFile) {
            let parsed = Self.parseClassNames((try? String(contentsOfFile: classesFile, encoding: .utf8)) ?? "", file: classesFile)
            classNames = parsed.names
            problems += parsed.problems
        } else {
            classNames = Self.vocClassNames
        }
        // split list
        let listPath = splitFile ?? root + "/ImageSets/Segmentation/\(split).txt"
        guard let listText = try? String(contentsOfFile: listPath, encoding: .utf8) else {
            throw DatasetError(root: root, problems: ["split list \(listPath) not found or unreadable"])
        }
        let list = Self.parseSplitList(listText, file: listPath)
        names = list.names
        problems += list.problems
        // masks folder
        let aug = root + "/SegmentationClassAug", plain = root + "/SegmentationClass"
        maskDirectory = fm.fileExists(atPath: aug) ? aug : (fm.fileExists(atPath: plain) ? plain : nil)
        for n in names where !fm.fileExists(atPath: root + "/JPEGImages/" + n + ".jpg") {
            problems.append("missing image \(root)/JPEGImages/\(n).jpg (listed in \(listPath))")
        }
        // image-level labels
        let clsPath = root + "/cls_labels.txt"
        var labels: [String: [Int]] = [:]
        let haveClsFile = fm.fileExists(atPath: clsPath)
        if haveClsFile {
            let parsed = Self.parseClassLabels((try? String(contentsOfFile: clsPath, encoding: .utf8)) ?? "", numClasses: classNames.count, file: clsPath)
            labels = parsed.labels
            problems += parsed.problems
            for n in names where labels[n] == nil { problems.append("\(clsPath): no line for image \(n)") }
        }
        let needMasks = requireMasks || !haveClsFile
        if needMasks && maskDirectory == nil {
            problems.append("no SegmentationClassAug/ or SegmentationClass/ folder" + (haveClsFile ? "" : " (needed to derive image labels: cls_labels.txt is absent)"))
        }
        if needMasks, let dir = maskDirectory {
            for n in names {
                let p = dir + "/" + n + ".png"
                guard fm.fileExists(atPath: p) else { problems.append("missing mask \(p)"); continue }
                do {
                    let m = try ImageCodec.readLabels(p)
                    var present = Set<Int>()
                    for v in m.values where v != 255 {
                        if Int(v) >= classNames.count { present.insert(-Int(v)) } else if v != 0 { present.insert(Int(v)) }
                    }
                    let bad = present.filter { $0 < 0 }.map { -$0 }.sorted()
                    if !bad.isEmpty { problems.append("\(p): label value(s) \(bad) out of range 0…\(classNames.count - 1) (255 = ignore)") }
                    if !haveClsFile { labels[n] = present.filter { $0 > 0 }.sorted() }
                } catch { problems.append("\(error)") }
            }
        }
        guard problems.isEmpty else { throw DatasetError(root: root, problems: problems) }
        imageLabels = names.map { labels[$0] ?? [] }
    }
}

// The dataset's text files, parsed from their contents (what `init` reads from disk; the fuzzer calls
// these directly). Each returns what it understood and every problem, one message per bad line.
extension VOCDataset {
    /// `classes.txt`: one name per line, background first; 2…255 names.
    public static func parseClassNames(_ text: String, file: String) -> (names: [String], problems: [String]) {
        let names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var problems: [String] = []
        if names.count < 2 { problems.append("\(file): needs background and at least one class, found \(names.count) names") }
        if names.count > 255 { problems.append("\(file): at most 255 classes (255 is the ignore value), found \(names.count)") }
        return (names, problems)
    }

    /// A split list: an image name per line (anything after the first space is ignored, as in VOC's
    /// `name label` lists). A name is a file name in `JPEGImages/`, so it may not contain a slash or be
    /// `.` or `..` (it would reach outside the dataset).
    public static func parseSplitList(_ text: String, file: String) -> (names: [String], problems: [String]) {
        var names: [String] = [], problems: [String] = []
        for (ln, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            guard let first = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first else { continue }
            let name = String(first)
            if name.contains("/") || name.contains("\\") || name == "." || name == ".." || name.contains("\0") {
                problems.append("\(file):\(ln + 1): '\(name)' is not a file name in JPEGImages/")
                continue
            }
            names.append(name)
        }
        if names.isEmpty && problems.isEmpty { problems.append("split list \(file) is empty") }
        return (names, problems)
    }

    /// `cls_labels.txt`: `name k k …` per line (space, tab or comma separated), k the 1-based foreground
    /// class ids; repeated ids count once.
    public static func parseClassLabels(_ text: String, numClasses: Int, file: String) -> (labels: [String: [Int]], problems: [String]) {
        var labels: [String: [Int]] = [:], problems: [String] = []
        for (ln, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," })
            guard let name = parts.first else { continue }
            var ks: [Int] = []
            for p in parts.dropFirst() {
                guard let k = Int(p), k >= 1, k < numClasses else {
                    problems.append("\(file):\(ln + 1): class '\(p)' of \(name) is not a foreground class id 1…\(numClasses - 1)")
                    continue
                }
                if !ks.contains(k) { ks.append(k) }
            }
            labels[String(name)] = ks.sorted()
        }
        return (labels, problems)
    }
}
