import Foundation
import SafeTensors

/// Writes TensorBoard event files (`events.out.tfevents.<time>.<host>`): records of a little-endian
/// UInt64 length, the masked CRC-32C of those 8 bytes, a serialized `tensorflow.Event` and the masked
/// CRC-32C of it.
///
/// The protobuf encoding is written by hand: the few fields used here (Event: wall_time 1, step 2,
/// file_version 3, summary 5, session_log 7; Summary.Value: tag 1, simple_value 2, image 4;
/// Summary.Image: height 1, width 2, colorspace 3, encoded_image_string 4; SessionLog: status 1) are
/// about forty lines, where generated code would add a dependency and a thousand lines nobody reads.
public final class TensorBoardWriter {
    public let path: String
    private let handle: FileHandle

    /// Starts a new event file in `directory` (created). When a resumed run starts at `resumeStep`,
    /// a SessionLog START at that step tells readers to drop the previous file's events from that step on.
    public init(directory: String, resumeStep: Int? = nil) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
        let base = directory + "/events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(host)"
        // two writers in one second (a quick resume) get distinct files
        var candidate = base, n = 1
        while FileManager.default.fileExists(atPath: candidate) { candidate = base + ".\(n)"; n += 1 }
        path = candidate
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw FileWriteError(path: path, reason: "cannot create the event file")
        }
        handle = h
        var first = Proto()
        first.double(1, Date().timeIntervalSince1970)
        first.string(3, "brain.Event:2")
        try write(first.bytes)
        if let resumeStep {
            var log = Proto()
            log.varint(1, 1)   // SessionLog.START
            var event = Self.event(step: resumeStep)
            event.message(7, log)
            try write(event.bytes)
        }
    }

    deinit { try? handle.close() }

    /// Scalars at one step, one record each.
    public func scalars(_ values: [(tag: String, value: Double)], step: Int) throws {
        for (tag, v) in values {
            var value = Proto()
            value.string(1, tag)
            value.float(2, Float(v))
            try write(Self.summary([value], step: step))
        }
    }

    /// A PNG image at one step.
    public func image(_ tag: String, png: Data, width: Int, height: Int, step: Int) throws {
        var image = Proto()
        image.varint(1, UInt64(height))
        image.varint(2, UInt64(width))
        image.varint(3, 3)   // RGB
        image.bytes(4, png)
        var value = Proto()
        value.string(1, tag)
        value.message(4, image)
        try write(Self.summary([value], step: step))
    }

    public func flush() throws {
        do { try handle.synchronize() } catch { throw FileWriteError(path: path, reason: (error as NSError).localizedDescription) }
    }

    static func event(step: Int) -> Proto {
        var e = Proto()
        e.double(1, Date().timeIntervalSince1970)
        e.varint(2, UInt64(bitPattern: Int64(step)))
        return e
    }

    static func summary(_ values: [Proto], step: Int) -> Data {
        var summary = Proto()
        for v in values { summary.message(1, v) }
        var e = event(step: step)
        e.message(5, summary)
        return e.bytes
    }

    private func write(_ event: Data) throws {
        var length = UInt64(event.count).littleEndian
        let header = Data(bytes: &length, count: 8)
        var record = header
        record.append(le32(CRC32C.masked(header)))
        record.append(event)
        record.append(le32(CRC32C.masked(event)))
        do { try handle.write(contentsOf: record) } catch {
            throw FileWriteError(path: path, reason: (error as NSError).localizedDescription)
        }
    }

    private func le32(_ v: UInt32) -> Data { withUnsafeBytes(of: v.littleEndian) { Data($0) } }
}

/// Protocol-buffer wire format, the parts an event needs.
struct Proto {
    private(set) var bytes = Data()

    private mutating func raw(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }

    private mutating func key(_ field: Int, _ wire: UInt64) { raw(UInt64(field) << 3 | wire) }

    mutating func varint(_ field: Int, _ v: UInt64) { key(field, 0); raw(v) }
    mutating func double(_ field: Int, _ v: Double) { key(field, 1); withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func float(_ field: Int, _ v: Float) { key(field, 5); withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func bytes(_ field: Int, _ v: Data) { key(field, 2); raw(UInt64(v.count)); bytes.append(v) }
    mutating func string(_ field: Int, _ v: String) { bytes(field, Data(v.utf8)) }
    mutating func message(_ field: Int, _ m: Proto) { bytes(field, m.bytes) }
}
