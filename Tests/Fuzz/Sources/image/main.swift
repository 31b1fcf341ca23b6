import AFA
import FuzzDriver
import Foundation

/// PNG and JPEG decoding (sniffed from the content) with a 4-megapixel limit.
fuzzMain { data in
    _ = try? ImageCodec.decodeRGB(data, path: "fuzz", maxPixels: 1 << 22)
}
