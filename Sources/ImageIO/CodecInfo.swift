import CJPEG
import CPNG

/// Versions of the image codecs the package links (libpng, libjpeg-turbo).
public enum CodecInfo {
    /// libpng's run-time version string, e.g. "1.6.39".
    public static var pngVersion: String { String(cString: png_get_libpng_ver(nil)) }

    /// The libjpeg API version the package was compiled against (62 for libjpeg-turbo's default ABI).
    public static var jpegVersion: Int { Int(JPEG_LIB_VERSION) }
}
