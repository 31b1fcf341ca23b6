import AFA
import XCTest

/// The model against the PyTorch reference: forward activations, then teacher-forced losses and gradients.
final class GoldenModelTests: XCTestCase {
    func testForwardMatchesReference() throws {
        // 4 stages + 8 attention maps + attn_pred + cls + seg
        let cmp = try Golden.check("afa_tiny_96_seed0", teacherForced: false, prefixes: ["fwd."], minimumKeys: 15)
        XCTAssertEqual(cmp.results.count, 15)
    }

    func testTeacherForcedLossesAndGradientsMatchReference() throws {
        // 8 loss keys and one gradient per parameter (192)
        let cmp = try Golden.check("afa_tiny_96_seed0", teacherForced: true, prefixes: ["loss.", "grad."], minimumKeys: 200)
        XCTAssertEqual(cmp.results.count, 200)
    }
}
