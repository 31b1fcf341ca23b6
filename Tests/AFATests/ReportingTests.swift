import AFA
import Foundation
import XCTest

/// TensorBoard's record format and the HTML report, without a browser (`make check-tensorboard` and
/// `make check-report` read them with TensorBoard's reader and Chromium).
final class ReportingTests: XCTestCase {
    var root: String!

    override func setUp() { root = NSTemporaryDirectory() + "afa-report-\(UUID().uuidString)" }
    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    func testCRC32CCheckValueAndMask() {
        XCTAssertEqual(CRC32C.checksum(Data("123456789".utf8)), 0xE306_9283)   // the standard check value
        let c = CRC32C.checksum(Data("abc".utf8))
        XCTAssertEqual(CRC32C.masked(Data("abc".utf8)), ((c >> 15) | (c << 17)) &+ 0xA282_EAD8)
    }

    func testEventRecordsAreFramedAndChecksummed() throws {
        let tb = try TensorBoardWriter(directory: root, resumeStep: 7)
        try tb.scalars([("loss/total", 0.5), ("lr/backbone", 1e-3)], step: 3)
        try tb.image("pictures", png: Data([0x89, 0x50]), width: 4, height: 2, step: 3)
        try tb.flush()
        let raw = try Data(contentsOf: URL(fileURLWithPath: tb.path))
        var records: [Data] = []
        var i = 0
        while i < raw.count {
            let header = raw.subdata(in: i..<(i + 8))
            let n = Int(header.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
            let hcrc = raw.subdata(in: (i + 8)..<(i + 12)).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }.littleEndian
            let body = raw.subdata(in: (i + 12)..<(i + 12 + n))
            let dcrc = raw.subdata(in: (i + 12 + n)..<(i + 16 + n)).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }.littleEndian
            XCTAssertEqual(hcrc, CRC32C.masked(header))
            XCTAssertEqual(dcrc, CRC32C.masked(body))
            records.append(body)
            i += 16 + n
        }
        XCTAssertEqual(i, raw.count)
        XCTAssertEqual(records.count, 5)   // version, START, two scalars, one image
        XCTAssertNotNil(String(decoding: records[0], as: UTF8.self).range(of: "brain.Event:2"))
        // START: step 7 (field 2), session_log (field 7) with status 1
        XCTAssertEqual(Array(records[1].suffix(6)), [0x10, 7, 0x3A, 2, 0x08, 1])
        // a scalar: tag, then simple_value (field 2, fixed32) 0.5
        let half = withUnsafeBytes(of: Float(0.5).bitPattern.littleEndian) { Array($0) }
        XCTAssertEqual(Array(records[2].suffix(5)), [0x15] + half)
        XCTAssertNotNil(String(decoding: records[2], as: UTF8.self).range(of: "loss/total"))
    }

    func testReportHoldsCurvesTablesAndConfusionMatrix() throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Data(#"{"preset": "tiny", "crop_size": 64, "batch_size": 4, "iterations": 20, "seed": 0, "train": {"lr": 0.001}}"#.utf8)
            .write(to: URL(fileURLWithPath: root + "/config.json"))
        let log = (1...4).map { #"{"iter": \#($0 * 5), "loss": \#(1.0 / Double($0)), "cls": 0.5, "seg": 0.3, "aff": 0.2, "lr": [0.001, 0, 0.01, 0.01], "images_per_s": 9.5}"# }
        try Data((log.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: root + "/log.jsonl"))
        let ev = #"{"iter": 20, "cam_miou": 0.5, "aff_miou": 0.4, "seg_miou": 0.625, "cls_f1": 0.9, "pixel_acc": 0.8, "images": 3, "class_names": ["background", "disc"], "per_class_iou": {"cam": [0.6, 0.4], "aff": [0.5, null], "seg": [0.75, 0.5]}, "seg_confusion": [[30, 10], [5, 15]]}"#
        try Data((ev + "\n").utf8).write(to: URL(fileURLWithPath: root + "/eval.jsonl"))
        let html = try RunReport(runDirectory: root).html()
        for title in ["Losses", "Learning rates", "mIoU over iterations", "Per-class IoU (evaluation at iteration 20)", "Confusion matrix"] {
            XCTAssertTrue(html.contains(title), title)
        }
        XCTAssertEqual(html.components(separatedBy: "<svg").count - 1, 3)
        XCTAssertTrue(html.contains("<td>disc</td><td>40.0</td><td>–</td><td>50.0</td>"))
        XCTAssertTrue(html.contains(">62.5<"))   // seg mIoU
        XCTAssertTrue(html.contains(">15</td>") && html.contains(">30</td>"))
        XCTAssertFalse(html.contains("<script"))
        XCTAssertThrowsError(try RunReport(runDirectory: root + "/nothing"))
    }
}
