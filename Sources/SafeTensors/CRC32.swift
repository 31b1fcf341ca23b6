import Foundation

/// A reflected 32-bit CRC, eight bytes per step with eight lookup tables ("slicing-by-8"), so checking
/// a 100 MB checkpoint costs a fraction of reading it.
public struct CRC32Table: Sendable {
    /// table[256 k + b]: the CRC of byte b followed by k zero bytes.
    private let table: [UInt32]

    /// `polynomial` in reflected form (0xEDB88320 for zlib's CRC-32, 0x82F63B78 for CRC-32C).
    public init(polynomial: UInt32) {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for b in 0..<256 {
            var c = UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? polynomial ^ (c >> 1) : c >> 1 }
            t[0][b] = c
        }
        for b in 0..<256 {
            for k in 1..<8 { t[k][b] = (t[k - 1][b] >> 8) ^ t[0][Int(t[k - 1][b] & 0xFF)] }
        }
        table = t.flatMap { $0 }
    }

    /// The CRC of `bytes`, continuing from `crc` (0 for a fresh start).
    public func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        guard var p = bytes.baseAddress, !bytes.isEmpty else { return crc }
        var n = bytes.count
        table.withUnsafeBufferPointer { t in
            while n >= 8 {
                let lo = p.loadUnaligned(as: UInt32.self).littleEndian ^ c
                let hi = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
                c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                  ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                  ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                  ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                p += 8; n -= 8
            }
            while n > 0 {
                c = t[Int((c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                p += 1; n -= 1
            }
        }
        return ~c
    }

    public func checksum(_ data: Data) -> UInt32 {
        data.withUnsafeBytes { checksum($0) }
    }
}

/// CRC-32 with the IEEE polynomial of zlib and PNG: the checksum of safetensors data areas.
public enum CRC32 {
    static let ieee = CRC32Table(polynomial: 0xEDB8_8320)

    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        ieee.checksum(bytes, continuing: crc)
    }

    public static func checksum(_ data: Data) -> UInt32 { ieee.checksum(data) }
}

/// CRC-32C (Castagnoli), the checksum of TensorBoard's event records.
public enum CRC32C {
    static let castagnoli = CRC32Table(polynomial: 0x82F6_3B78)

    public static func checksum(_ data: Data) -> UInt32 { castagnoli.checksum(data) }

    /// TensorFlow's masked form, which keeps a CRC of data that holds CRCs from looking like one.
    public static func masked(_ data: Data) -> UInt32 {
        let c = checksum(data)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
}
