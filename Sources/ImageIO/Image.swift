import CImageCodecs
import Foundation
import TensorCore

/// An 8-bit picture, interleaved RGB, row-major.
public struct RGBImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    /// width·height·3 samples.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) samples for \(width)×\(height)")
        self.width = width; self.height = height; self.pixels = pixels
    }

    public init(width: Int, height: Int) { self.init(width: width, height: height, pixels: [UInt8](repeating: 0, count: width * height * 3)) }
}

/// A label map: one class index per pixel (255 = ignore), row-major.
public struct LabelMap: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var values: [UInt8]

    public init(width: Int, height: Int, values: [UInt8]) {
        precondition(values.count == width * height, "LabelMap: \(values.count) values for \(width)×\(height)")
        self.width = width; self.height = height; self.values = values
    }
}

/// A file that could not be read, decoded or written. Every case names the file.
public enum ImageIOError: Error, CustomStringConvertible, LocalizedError, Equatable {
    case unreadable(path: String, reason: String)
    case corrupt(path: String, format: String, reason: String)
    case unsupported(path: String, reason: String)
    case unwritable(path: String, reason: String)
    /// The header declares more pixels than the caller accepts (nothing was decoded).
    case tooLarge(path: String, width: Int, height: Int, limit: Int)

    public var description: String {
        switch self {
        case let .unreadable(p, r): return "\(p): cannot read file: \(r)"
        case let .corrupt(p, f, r): return "\(p): corrupt or truncated \(f): \(r)"
        case let .unsupported(p, r): return "\(p): unsupported image: \(r)"
        case let .unwritable(p, r): return "\(p): cannot write file: \(r)"
        case let .tooLarge(p, w, h, limit): return "\(p): image of \(w)×\(h) pixels is over the limit of \(limit) pixels"
        }
    }
    public var errorDescription: String? { description }
}

/// PNG and JPEG through libpng and libjpeg(-turbo).
public enum ImageCodec {
    enum Format { case png, jpeg }

    static func sniff(_ data: Data) -> Format? {
        if data.count >= 8, data.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if data.count >= 3, data[data.startIndex] == 0xFF, data[data.startIndex + 1] == 0xD8 { return .jpeg }
        return nil
    }

    static func read(_ path: String) throws -> Data {
        guard FileManager.default.fileExists(atPath: path) else { throw ImageIOError.unreadable(path: path, reason: "no such file") }
        do { return try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ImageIOError.unreadable(path: path, reason: error.localizedDescription)
        }
    }

    /// Largest image the readers decode unless told otherwise (width × height): 100 megapixels, 300 MB of
    /// RGB. A header that declares more is refused before any pixel memory is allocated.
    public static let defaultMaxPixels = 100_000_000

    /// Decodes with the C layer; `format` selects the decoder.
    static func decodeRaw(_ data: Data, path: String, format: Format, maxPixels: Int) throws -> afa_decoded_image {
        var img = afa_decoded_image()
        var err = [CChar](repeating: 0, count: 512)
        let limit = UInt64(max(maxPixels, 0))
        let rc = data.withUnsafeBytes { raw -> Int32 in
            let p = raw.bindMemory(to: UInt8.self).baseAddress!
            return format == .png ? afa_png_decode(p, raw.count, limit, &img, &err, err.count)
                : afa_jpeg_decode(p, raw.count, limit, &img, &err, err.count)
        }
        if rc == -2 {
            throw ImageIOError.tooLarge(path: path, width: Int(img.width), height: Int(img.height), limit: maxPixels)
        }
        guard rc == 0 else {
            throw ImageIOError.corrupt(path: path, format: format == .png ? "PNG" : "JPEG", reason: String(cString: err))
        }
        return img
    }

    /// Reads a picture (PNG or JPEG, sniffed from the content) as 8-bit RGB. Greyscale is replicated,
    /// alpha dropped, 16-bit scaled, palette expanded, CMYK converted.
    public static func readRGB(_ path: String, maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
        let data = try read(path)
        return try decodeRGB(data, path: path, maxPixels: maxPixels)
    }

    /// Decodes a PNG or JPEG held in memory; an image whose header declares more than `maxPixels`
    /// pixels is refused with `ImageIOError.tooLarge` before anything is allocated for it.
    public static func decodeRGB(_ data: Data, path: String = "<memory>", maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
        guard let format = sniff(data) else { throw ImageIOError.unsupported(path: path, reason: "neither PNG nor JPEG") }
        var img = try decodeRaw(data, path: path, format: format, maxPixels: maxPixels)
        defer { afa_free(img.pixels) }
        if format == .png && img.is_palette != 0 {
            // The decoder keeps palette indices (label maps need them); pictures map them through PLTE.
            let palette = try pngPalette(data, path: path)
            let n = Int(img.width) * Int(img.height)
            let idx = img.pixels.assumingMemoryBound(to: UInt8.self)
            var out = [UInt8](repeating: 0, count: n * 3)
            for i in 0..<n {
                let k = Int(idx[i])
                guard k < palette.count / 3 else { throw ImageIOError.corrupt(path: path, format: "PNG", reason: "palette index \(k) beyond \(palette.count / 3) entries") }
                out[3 * i] = palette[3 * k]; out[3 * i + 1] = palette[3 * k + 1]; out[3 * i + 2] = palette[3 * k + 2]
            }
            return RGBImage(width: Int(img.width), height: Int(img.height), pixels: out)
        }
        return RGBImage(width: Int(img.width), height: Int(img.height), pixels: toRGB(&img, cmyk: format == .jpeg && img.channels == 4))
    }

    static func toRGB(_ img: inout afa_decoded_image, cmyk: Bool) -> [UInt8] {
        let n = Int(img.width) * Int(img.height), c = Int(img.channels)
        var out = [UInt8](repeating: 0, count: n * 3)
        func sample(_ i: Int) -> UInt8 {
            img.bit_depth == 16 ? UInt8(img.pixels.assumingMemoryBound(to: UInt16.self)[i] >> 8)
                : img.pixels.assumingMemoryBound(to: UInt8.self)[i]
        }
        for p in 0..<n {
            switch c {
            case 1, 2:
                let g = sample(p * c)
                out[3 * p] = g; out[3 * p + 1] = g; out[3 * p + 2] = g
            case 4 where cmyk:
                // Adobe writes CMYK inverted (samples are 1 − C, …): RGB = C·K/255; plain CMYK: (255 − C)(255 − K)/255.
                var (cc, m, y, k) = (Int(sample(4 * p)), Int(sample(4 * p + 1)), Int(sample(4 * p + 2)), Int(sample(4 * p + 3)))
                if img.is_palette != 2 { (cc, m, y, k) = (255 - cc, 255 - m, 255 - y, 255 - k) }
                out[3 * p] = UInt8(cc * k / 255); out[3 * p + 1] = UInt8(m * k / 255); out[3 * p + 2] = UInt8(y * k / 255)
            default:
                out[3 * p] = sample(p * c); out[3 * p + 1] = sample(p * c + 1); out[3 * p + 2] = sample(p * c + 2)
            }
        }
        return out
    }

    /// Reads a label PNG as class indices: a palette PNG gives its raw indices (never the colours),
    /// a greyscale PNG its grey values (8- or 16-bit).
    public static func readLabels(_ path: String, maxPixels: Int = defaultMaxPixels) throws -> LabelMap {
        try decodeLabels(try read(path), path: path, maxPixels: maxPixels)
    }

    /// The same for a label PNG held in memory.
    public static func decodeLabels(_ data: Data, path: String = "<memory>", maxPixels: Int = defaultMaxPixels) throws -> LabelMap {
        guard sniff(data) == .png else { throw ImageIOError.unsupported(path: path, reason: "label maps must be PNG (palette or greyscale)") }
        let img = try decodeRaw(data, path: path, format: .png, maxPixels: maxPixels)
        defer { afa_free(img.pixels) }
        let n = Int(img.width) * Int(img.height)
        guard img.channels == 1 || img.channels == 2 else {
            throw ImageIOError.unsupported(path: path, reason: "label PNG has \(img.channels) channels; expected palette or greyscale indices")
        }
        var values = [UInt8](repeating: 0, count: n)
        let c = Int(img.channels)
        for i in 0..<n {
            let v: Int = img.bit_depth == 16 ? Int(img.pixels.assumingMemoryBound(to: UInt16.self)[i * c])
                : Int(img.pixels.assumingMemoryBound(to: UInt8.self)[i * c])
            guard v <= 255 else { throw ImageIOError.unsupported(path: path, reason: "label value \(v) at pixel \(i) does not fit 0…255") }
            values[i] = UInt8(v)
        }
        return LabelMap(width: Int(img.width), height: Int(img.height), values: values)
    }

    /// The PLTE chunk of a PNG (RGB triples).
    static func pngPalette(_ data: Data, path: String) throws -> [UInt8] {
        var pos = data.startIndex + 8
        while pos + 8 <= data.endIndex {
            let len = Int(data[pos]) << 24 | Int(data[pos + 1]) << 16 | Int(data[pos + 2]) << 8 | Int(data[pos + 3])
            let type = String(decoding: data[(pos + 4)..<(pos + 8)], as: UTF8.self)
            if type == "PLTE", pos + 8 + len <= data.endIndex { return Array(data[(pos + 8)..<(pos + 8 + len)]) }
            pos += 12 + len
        }
        throw ImageIOError.corrupt(path: path, format: "PNG", reason: "palette image without a PLTE chunk")
    }

    static func writeAtomically(_ data: Data, to path: String) throws {
        do { try AtomicFile.write(data, to: path) } catch let e as FileWriteError {
            throw ImageIOError.unwritable(path: path, reason: e.reason)
        }
    }

    static func encoded(_ rc: Int32, _ out: UnsafeMutablePointer<UInt8>?, _ size: Int, _ err: [CChar], path: String) throws -> Data {
        guard rc == 0, let out else { throw ImageIOError.unwritable(path: path, reason: String(cString: err)) }
        defer { afa_free(out) }
        return Data(bytes: out, count: size)
    }

    /// PNG bytes of an RGB picture.
    public static func encodePNG(_ image: RGBImage, path: String = "<memory>") throws -> Data {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var err = [CChar](repeating: 0, count: 512)
        let rc = afa_png_encode(image.pixels, Int32(image.width), Int32(image.height), 3, nil, 0, &out, &size, &err, err.count)
        return try encoded(rc, out, size, err, path: path)
    }

    /// Palette PNG bytes of a label map (the palette defaults to the VOC colour map).
    public static func encodeLabelPNG(_ labels: LabelMap, palette: [UInt8] = VOCPalette.rgb, path: String = "<memory>") throws -> Data {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var err = [CChar](repeating: 0, count: 512)
        let rc = afa_png_encode(labels.values, Int32(labels.width), Int32(labels.height), 1, palette, Int32(palette.count / 3), &out, &size, &err, err.count)
        return try encoded(rc, out, size, err, path: path)
    }

    /// Baseline JPEG, or progressive (several scans, coarse to fine) with `progressive`.
    public static func encodeJPEG(_ image: RGBImage, quality: Int = 92, progressive: Bool = false, path: String = "<memory>") throws -> Data {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var err = [CChar](repeating: 0, count: 512)
        let rc = afa_jpeg_encode(image.pixels, Int32(image.width), Int32(image.height), 3, Int32(quality), progressive ? 1 : 0,
                                 &out, &size, &err, err.count)
        return try encoded(rc, out, size, err, path: path)
    }

    public static func writePNG(_ image: RGBImage, to path: String) throws { try writeAtomically(try encodePNG(image, path: path), to: path) }
    public static func writeLabelPNG(_ labels: LabelMap, to path: String) throws { try writeAtomically(try encodeLabelPNG(labels, path: path), to: path) }
    public static func writeJPEG(_ image: RGBImage, to path: String, quality: Int = 92) throws {
        try writeAtomically(try encodeJPEG(image, quality: quality, path: path), to: path)
    }
}

/// The PASCAL VOC colour map: class k's colour from the bits of k; 255 (ignore) is white-ish as VOC draws it.
public enum VOCPalette {
    public static let rgb: [UInt8] = {
        var p = [UInt8](repeating: 0, count: 256 * 3)
        for k in 0..<256 {
            var (r, g, b, c) = (0, 0, 0, k)
            for j in 0..<8 {
                r |= ((c >> 0) & 1) << (7 - j)
                g |= ((c >> 1) & 1) << (7 - j)
                b |= ((c >> 2) & 1) << (7 - j)
                c >>= 3
            }
            p[3 * k] = UInt8(r); p[3 * k + 1] = UInt8(g); p[3 * k + 2] = UInt8(b)
        }
        p[765] = 224; p[766] = 224; p[767] = 192
        return p
    }()

    public static func color(_ k: Int) -> (UInt8, UInt8, UInt8) { (rgb[3 * k], rgb[3 * k + 1], rgb[3 * k + 2]) }
}
