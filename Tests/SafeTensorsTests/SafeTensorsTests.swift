import Foundation
import SafeTensors
import TensorCore
import XCTest

final class SafeTensorsTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// A file with hand-written header and payload.
    func rawFile(header: String, payload: [UInt8], declaredLength: UInt64? = nil) -> Data {
        var d = Data()
        var n = (declaredLength ?? UInt64(header.utf8.count)).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(contentsOf: Array(header.utf8))
        d.append(contentsOf: payload)
        return d
    }

    func testRoundTripWithMetadataAndIntegers() throws {
        var w = SafeTensorsWriter(metadata: ["format": "test", "config": "{\"a\": 1}"])
        let t = try Tensor(shape: [2, 3], values: [1, -2, 3.5, 4, 5, .pi])
        w.add("b.weight", t)
        w.addInt32("labels", shape: [3], [0, 255, -7])
        w.addInt64("count", shape: [], [1001])
        let p = path("x.safetensors")
        try w.write(to: p)
        let f = try SafeTensorsFile(path: p)
        XCTAssertEqual(f.metadata["format"], "test")
        XCTAssertEqual(f.names, ["b.weight", "count", "labels"])
        XCTAssertEqual(try f.tensor("b.weight").array, t.array)
        XCTAssertEqual(try f.tensor("b.weight").shape, [2, 3])
        XCTAssertEqual(try f.integers("labels"), [0, 255, -7])
        XCTAssertEqual(try f.integers("count"), [1001])
        XCTAssertEqual(try f.entry("count").shape, [])
        // No temporary files are left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["x.safetensors"])
    }

    /// The writer records the data area's CRC-32; a flipped bit anywhere in it is reported as damage,
    /// and a file without the record (another writer's) still opens.
    func testChecksumCatchesDamagedData() throws {
        XCTAssertEqual(CRC32.checksum(Data("123456789".utf8)), 0xCBF4_3926)   // the standard check value
        XCTAssertEqual(CRC32.checksum(Data()), 0)
        var long = Data(count: 1000)
        for i in 0..<long.count { long[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        // the 8-byte path and the byte-wise tail agree with a one-byte-at-a-time continuation
        let split = long.prefix(13).withUnsafeBytes { CRC32.checksum($0) }
        XCTAssertEqual(long.dropFirst(13).withUnsafeBytes { CRC32.checksum($0, continuing: split) }, CRC32.checksum(long))

        var w = SafeTensorsWriter(metadata: ["format": "test"])
        w.add("w", try Tensor(shape: [64], values: (0..<64).map { Float($0) * 0.25 }))
        let good = try w.encoded()
        let f = try SafeTensorsFile(data: good)
        XCTAssertEqual(f.metadata[SafeTensorsFile.checksumKey]?.count, 8)
        let dataStart = good.count - 64 * 4
        for offset in [dataStart, dataStart + 100, good.count - 1] {
            var bad = good
            bad[offset] ^= 0x10
            XCTAssertThrowsError(try SafeTensorsFile(data: bad, path: "bad.safetensors")) { e in
                XCTAssertTrue("\(e)".contains("fails its checksum"), "\(e)")
            }
        }
        let plain = rawFile(header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, payload: [0, 0, 128, 63])
        XCTAssertEqual(try SafeTensorsFile(data: plain).tensor("w").array, [1])
    }

    /// Fuzzer finding: whole-valued floats out of Int's range (or infinite) trapped in `integers`.
    func testIntegersFromFloatsRefuseHugeAndNonFiniteValues() throws {
        for v: Float in [1e30, .infinity, -.infinity, .nan, 0.5] {
            var w = SafeTensorsWriter()
            w.add("x", try Tensor(shape: [2], values: [3, v]))
            let f = try SafeTensorsFile(data: try w.encoded())
            XCTAssertThrowsError(try f.integers("x"), "\(v)")
        }
        var w = SafeTensorsWriter()
        w.add("x", try Tensor(shape: [2], values: [3, -16_777_216]))
        XCTAssertEqual(try SafeTensorsFile(data: try w.encoded()).integers("x"), [3, -16_777_216])
    }

    func testReadsOtherDTypes() throws {
        // F16 1.0, -2.0; BF16 0.5; F64 3.25; U8 7; BOOL true
        let header = """
        {"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"bf":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]},\
        "d":{"dtype":"F64","shape":[1],"data_offsets":[6,14]},"u":{"dtype":"U8","shape":[1],"data_offsets":[14,15]},\
        "b":{"dtype":"BOOL","shape":[1],"data_offsets":[15,16]}}
        """
        var payload: [UInt8] = [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x3F]
        withUnsafeBytes(of: (3.25 as Double).bitPattern.littleEndian) { payload += $0 }
        payload += [7, 1]
        let f = try SafeTensorsFile(data: rawFile(header: header, payload: payload), path: "mem")
        XCTAssertEqual(try f.tensor("h").array, [1, -2])
        XCTAssertEqual(try f.tensor("bf").array, [0.5])
        XCTAssertEqual(try f.tensor("d").array, [3.25])
        XCTAssertEqual(try f.integers("u"), [7])
        XCTAssertEqual(try f.integers("b"), [1])
    }

    func assertRejected(_ data: Data, containing words: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafeTensorsFile(data: data, path: "case.safetensors"), file: file, line: line) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("case.safetensors"), text, file: file, line: line)
            for w in words { XCTAssertTrue(text.contains(w), "'\(w)' missing in: \(text)", file: file, line: line) }
        }
    }

    func testRejectsBrokenFiles() throws {
        let good = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let payload = [UInt8](repeating: 0, count: 8)
        XCTAssertNoThrow(try SafeTensorsFile(data: rawFile(header: good, payload: payload)))
        // Truncated: shorter than the length field; payload cut short.
        assertRejected(Data([1, 2, 3]), containing: ["shorter"])
        assertRejected(rawFile(header: good, payload: [0, 0, 0, 0]), containing: ["'a'"])
        // Header length larger than the file.
        assertRejected(rawFile(header: good, payload: payload, declaredLength: 1 << 40), containing: ["exceeds the file size"])
        // Not JSON.
        assertRejected(rawFile(header: "{not json", payload: []), containing: ["JSON"])
        // Overlapping ranges.
        let overlap = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        assertRejected(rawFile(header: overlap, payload: payload), containing: ["overlaps"])
        // Out of bounds.
        let oob = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        assertRejected(rawFile(header: oob, payload: payload), containing: ["'a'", "outside"])
        // Shape × dtype size differs from the byte range.
        let wrongSize = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#
        assertRejected(rawFile(header: wrongSize, payload: payload), containing: ["'a'", "F32"])
        // Unknown dtype, negative dimension, gap.
        assertRejected(rawFile(header: #"{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#, payload: payload), containing: ["Q7"])
        assertRejected(rawFile(header: #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, payload: payload), containing: ["dimension"])
        assertRejected(rawFile(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, payload: payload), containing: ["gap"])
    }

    func testMissingFileAndMissingTensor() throws {
        XCTAssertThrowsError(try SafeTensorsFile(path: path("nope.safetensors"))) { e in
            XCTAssertTrue("\(e)".contains("nope.safetensors"), "\(e)")
        }
        let f = try SafeTensorsFile(data: rawFile(header: "{}", payload: []), path: "empty.safetensors")
        XCTAssertThrowsError(try f.tensor("w")) { e in XCTAssertEqual("\(e)", "empty.safetensors: no tensor named 'w'") }
    }
}
