import AFA
import FuzzDriver
import Foundation

/// Label PNGs (palette or greyscale indices) with a 4-megapixel limit.
fuzzMain { data in
    _ = try? ImageCodec.decodeLabels(data, path: "fuzz", maxPixels: 1 << 22)
}
