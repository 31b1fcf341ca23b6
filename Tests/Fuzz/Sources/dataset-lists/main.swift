import AFA
import FuzzDriver
import Foundation

/// The dataset's text files: the input is split at its first two NUL bytes into `classes.txt`, a split
/// list and `cls_labels.txt`, each parsed as `VOCDataset` parses it. Besides not crashing, what comes
/// out must hold the parsers' promises: class counts in 2…255 unless reported, image names that stay
/// inside the dataset, class ids in range, sorted and unique.
fuzzMain { data in
    let parts = data.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3 else { return }
    let text = parts.map { String(decoding: $0, as: UTF8.self) }
    let classes = VOCDataset.parseClassNames(text[0], file: "classes.txt")
    precondition(classes.problems.isEmpty == (2...255).contains(classes.names.count))
    precondition(classes.names.allSatisfy { !$0.isEmpty })
    let list = VOCDataset.parseSplitList(text[1], file: "train.txt")
    for n in list.names { precondition(!n.isEmpty && !n.contains("/") && n != "." && n != "..", n) }
    precondition(!list.names.isEmpty || !list.problems.isEmpty)
    let numClasses = max(classes.names.count, 2)
    let labels = VOCDataset.parseClassLabels(text[2], numClasses: numClasses, file: "cls_labels.txt")
    for (_, ks) in labels.labels {
        precondition(ks == Array(Set(ks)).sorted() && ks.allSatisfy { (1..<numClasses).contains($0) })
    }
}
