import AFA
import FuzzDriver
import Foundation

/// PNG and JPEG decoding (sniffed from the content) with a 65,536-pixel limit: the check against the
/// limit is the same code for any limit, and a low one keeps the fuzzer from spending its time decoding
/// large declared images row by row (about 10 ms per megapixel under AddressSanitizer).
fuzzMain { data in
    _ = try? ImageCodec.decodeRGB(data, path: "fuzz", maxPixels: 1 << 16)
}
