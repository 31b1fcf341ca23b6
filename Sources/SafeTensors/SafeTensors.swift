import Foundation
import TensorCore

/// Element types of the safetensors format that this package reads.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .u8, .bool: return 1
        }
    }
}

/// A problem with a safetensors file. Every case names the file and, where one is at fault, the tensor.
public enum SafeTensorsError: Error, CustomStringConvertible, LocalizedError {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case badTensor(path: String, name: String, reason: String)
    case missingTensor(path: String, name: String)

    public var description: String {
        switch self {
        case let .unreadable(p, r): return "\(p): cannot read: \(r)"
        case let .malformed(p, r): return "\(p): not a valid safetensors file: \(r)"
        case let .badTensor(p, n, r): return "\(p): tensor '\(n)': \(r)"
        case let .missingTensor(p, n): return "\(p): no tensor named '\(n)'"
        }
    }

    public var errorDescription: String? { description }
}

/// A parsed, validated safetensors file held in memory.
///
/// Layout: an 8-byte little-endian header length N, N bytes of JSON (`name → {dtype, shape,
/// data_offsets}` plus an optional `__metadata__` string map), then the tensor bytes. Everything is
/// checked before any tensor is trusted: the header fits the file, the JSON is well formed, each
/// tensor's byte range equals shape × dtype size, and the ranges tile the data area exactly.
public struct SafeTensorsFile: Sendable {
    public struct Entry: Sendable {
        public let name: String
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        /// Byte range inside the data area.
        public let range: Range<Int>
        public var count: Int { shape.reduce(1, *) }
    }

    /// The file's path (for messages).
    public let path: String
    /// `__metadata__` (string → string).
    public let metadata: [String: String]
    /// Tensors by name.
    public let entries: [String: Entry]
    private let bytes: Data
    private let dataStart: Int
    /// The whole file as read (header and tensors).
    public var contents: Data { bytes }

    /// Tensor names, sorted.
    public var names: [String] { entries.keys.sorted() }

    /// `__metadata__` key of the data area's CRC-32 (8 lowercase hex digits), written by
    /// `SafeTensorsWriter` and checked on reading when present (files from other writers have none).
    public static let checksumKey = "data_crc32"

    /// Upper bound on the JSON header (the format's own limit is 100 MB).
    public static let maxHeaderBytes = 100_000_000

    /// Reads and validates `path`.
    public init(path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw SafeTensorsError.unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        try self.init(data: data, path: path)
    }

    /// Validates an in-memory file; `path` is used in messages.
    public init(data: Data, path: String = "<memory>") throws {
        self.path = path
        let bytes = data
        guard bytes.count >= 8 else {
            throw SafeTensorsError.malformed(path: path, reason: "\(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let n64: UInt64 = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) }.littleEndian
        guard n64 <= UInt64(bytes.count - 8) else {
            throw SafeTensorsError.malformed(path: path, reason: "header length \(n64) exceeds the file size \(bytes.count)")
        }
        guard n64 <= UInt64(Self.maxHeaderBytes) else {
            throw SafeTensorsError.malformed(path: path, reason: "header length \(n64) above the \(Self.maxHeaderBytes)-byte limit")
        }
        let n = Int(n64)
        let start = bytes.startIndex
        let headerData = bytes.subdata(in: (start + 8)..<(start + 8 + n))
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw SafeTensorsError.malformed(path: path, reason: "header is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw SafeTensorsError.malformed(path: path, reason: "header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var entries: [String: Entry] = [:]
        let dataSize = bytes.count - 8 - n
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw SafeTensorsError.malformed(path: path, reason: "__metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw SafeTensorsError.malformed(path: path, reason: "__metadata__['\(k)'] is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            entries[name] = try Self.parseEntry(name: name, value: value, dataSize: dataSize, path: path)
        }
        // The byte ranges must tile [0, dataSize) exactly: no overlap, no gap.
        var cursor = 0
        for e in entries.values.sorted(by: { ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound) }) {
            if e.range.lowerBound < cursor {
                throw SafeTensorsError.badTensor(path: path, name: e.name, reason: "byte range \(e.range) overlaps another tensor")
            }
            if e.range.lowerBound > cursor {
                throw SafeTensorsError.badTensor(path: path, name: e.name, reason: "byte range \(e.range) leaves a gap after offset \(cursor)")
            }
            cursor = e.range.upperBound
        }
        if cursor != dataSize {
            throw SafeTensorsError.malformed(path: path, reason: "tensors cover \(cursor) of \(dataSize) data bytes")
        }
        // A writer that recorded the data area's CRC-32 lets a reader tell a damaged file from a good one.
        if let recorded = metadata[Self.checksumKey] {
            guard let want = UInt32(recorded, radix: 16), recorded.count == 8 else {
                throw SafeTensorsError.malformed(path: path, reason: "__metadata__['\(Self.checksumKey)'] is not 8 hex digits")
            }
            let got = bytes.withUnsafeBytes { CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[(8 + n)...])) }
            guard got == want else {
                throw SafeTensorsError.malformed(path: path, reason: String(format: "data area fails its checksum (CRC-32 %08x, recorded %08x): the file is damaged", got, want))
            }
        }
        self.metadata = metadata
        self.entries = entries
        self.bytes = bytes
        self.dataStart = 8 + n
    }

    private static func parseEntry(name: String, value: Any, dataSize: Int, path: String) throws -> Entry {
        func bad(_ r: String) -> SafeTensorsError { .badTensor(path: path, name: name, reason: r) }
        guard let info = value as? [String: Any] else { throw bad("entry is not an object") }
        guard let dt = info["dtype"] as? String else { throw bad("missing dtype") }
        guard let dtype = SafeTensorsDType(rawValue: dt) else { throw bad("unsupported dtype \(dt)") }
        guard let shapeAny = info["shape"] as? [Any] else { throw bad("missing shape") }
        var shape: [Int] = []
        var count = 1
        for d in shapeAny {
            guard let n = (d as? NSNumber)?.intValue, n >= 0, "\(d)" == "\(n)" else { throw bad("bad dimension \(d) in shape") }
            let (p, overflow) = count.multipliedReportingOverflow(by: n)
            guard !overflow else { throw bad("shape \(shapeAny) overflows") }
            shape.append(n); count = p
        }
        guard let offs = info["data_offsets"] as? [Any], offs.count == 2,
              let b = (offs[0] as? NSNumber)?.intValue, let e = (offs[1] as? NSNumber)?.intValue else {
            throw bad("missing or malformed data_offsets")
        }
        guard b >= 0, b <= e, e <= dataSize else {
            throw bad("data_offsets [\(b), \(e)] outside the \(dataSize)-byte data area")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, bytes == e - b else {
            throw bad("\(e - b) bytes do not hold \(dtype.rawValue) \(shape) (\(count) × \(dtype.size) bytes)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, range: b..<e)
    }

    public func entry(_ name: String) throws -> Entry {
        guard let e = entries[name] else { throw SafeTensorsError.missingTensor(path: path, name: name) }
        return e
    }

    public func contains(_ name: String) -> Bool { entries[name] != nil }

    /// Calls `body` with the raw bytes of tensor `name`.
    func withBytes<T>(_ e: Entry, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try bytes.withUnsafeBytes { all in
            try body(UnsafeRawBufferPointer(rebasing: all[(dataStart + e.range.lowerBound)..<(dataStart + e.range.upperBound)]))
        }
    }

    /// The tensor converted to Float32 (any numeric dtype).
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        let t = Tensor(zeros: e.shape)
        let out = t.data
        withBytes(e) { raw in
            let n = e.count
            switch e.dtype {
            case .f32: for i in 0..<n { out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            case .f64: for i in 0..<n { out[i] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
            case .f16: for i in 0..<n { out[i] = halfToFloat(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .bf16: for i in 0..<n { out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
            case .i64: for i in 0..<n { out[i] = Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
            case .i32: for i in 0..<n { out[i] = Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
            case .u8, .bool: for i in 0..<n { out[i] = Float(raw[i]) }
            }
        }
        return t
    }

    /// The values as Double (exact for F64; other dtypes converted).
    public func doubles(_ name: String) throws -> [Double] {
        let e = try entry(name)
        if e.dtype == .f64 {
            return withBytes(e) { raw in (0..<e.count).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) } }
        }
        return try tensor(name).array.map(Double.init)
    }

    /// The tensor as integers (integer and bool dtypes; float dtypes must hold whole numbers).
    public func integers(_ name: String) throws -> [Int] {
        let e = try entry(name)
        return try withBytes(e) { raw -> [Int] in
            let n = e.count
            switch e.dtype {
            case .i64: return (0..<n).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
            case .i32: return (0..<n).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
            case .u8, .bool: return (0..<n).map { Int(raw[$0]) }
            default:
                let f = try tensor(name).array
                // Whole, finite and exactly representable (|v| ≤ 2^24 holds every Float integer without gaps).
                guard f.allSatisfy({ $0.isFinite && $0 == $0.rounded() && abs($0) <= 16_777_216 }) else {
                    throw SafeTensorsError.badTensor(path: path, name: name, reason: "expected integers, found fractional, non-finite or out-of-range values")
                }
                return f.map { Int($0) }
            }
        }
    }
}

/// IEEE half → Float.
@inline(__always) func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = Int((h >> 10) & 0x1F)
    let mant = UInt32(h & 0x3FF)
    if exp == 0 {
        if mant == 0 { return Float(bitPattern: sign) }
        let v = Float(mant) * 0x1p-24   // subnormal
        return sign == 0 ? v : -v
    }
    if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13)) }
    return Float(bitPattern: sign | (UInt32(exp - 15 + 127) << 23) | (mant << 13))
}

/// Builds a safetensors file: F32, F64, I32, I64 and U8 tensors plus `__metadata__`, written atomically.
public struct SafeTensorsWriter {
    private enum Payload { case f32(Tensor), f64([Double]), i32([Int32]), i64([Int64]), u8([UInt8]) }
    private var items: [String: (shape: [Int], payload: Payload)] = [:]
    public var metadata: [String: String] = [:]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    public mutating func add(_ name: String, _ tensor: Tensor) {
        items[name] = (tensor.shape, .f32(tensor))
    }

    public mutating func addInt32(_ name: String, shape: [Int], _ values: [Int32]) {
        precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for shape \(shape)")
        items[name] = (shape, .i32(values))
    }

    public mutating func addInt64(_ name: String, shape: [Int], _ values: [Int64]) {
        precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for shape \(shape)")
        items[name] = (shape, .i64(values))
    }

    public mutating func addUInt8(_ name: String, shape: [Int], _ values: [UInt8]) {
        precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for shape \(shape)")
        items[name] = (shape, .u8(values))
    }

    public mutating func addFloat64(_ name: String, shape: [Int], _ values: [Double]) {
        precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for shape \(shape)")
        items[name] = (shape, .f64(values))
    }

    public var names: [String] { items.keys.sorted() }

    /// Drops a tensor added earlier (no-op when absent).
    public mutating func remove(_ name: String) { items[name] = nil }

    /// The encoded file: header with tensors in sorted order, padded with spaces to 8 bytes.
    public func encoded() throws -> Data {
        var header: [String: Any] = [:]
        var body = Data()
        for name in items.keys.sorted() {
            let (shape, payload) = items[name]!
            let begin = body.count
            let dtype: String
            switch payload {
            case let .f32(t):
                dtype = "F32"
                var le = [UInt32](repeating: 0, count: t.count)
                for i in 0..<t.count { le[i] = t.data[i].bitPattern.littleEndian }
                le.withUnsafeBytes { body.append(contentsOf: $0) }
            case let .f64(v):
                dtype = "F64"
                v.map { $0.bitPattern.littleEndian }.withUnsafeBytes { body.append(contentsOf: $0) }
            case let .i32(v):
                dtype = "I32"
                v.map { $0.littleEndian }.withUnsafeBytes { body.append(contentsOf: $0) }
            case let .i64(v):
                dtype = "I64"
                v.map { $0.littleEndian }.withUnsafeBytes { body.append(contentsOf: $0) }
            case let .u8(v):
                dtype = "U8"
                body.append(contentsOf: v)
            }
            header[name] = ["dtype": dtype, "shape": shape, "data_offsets": [begin, body.count]] as [String: Any]
        }
        var meta = metadata
        meta[SafeTensorsFile.checksumKey] = String(format: "%08x", CRC32.checksum(body))
        header["__metadata__"] = meta
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(body)
        return out
    }

    /// Writes to a temporary file next to `path`, then renames it into place.
    public func write(to path: String) throws {
        let data = try encoded()
        try AtomicFile.write(data, to: path)
    }
}

