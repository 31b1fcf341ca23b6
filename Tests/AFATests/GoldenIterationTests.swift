import AFA
import XCTest

/// One full training iteration and its units against the PyTorch reference (README rules, fragile
/// pixels excepted): free-running for the forward, CAMs, random walk, PAR and labels; teacher-forced
/// for the losses, gradients, the optimiser step and its learning rates.
final class GoldenIterationTests: XCTestCase {
    func testFreeRunningIterationMatchesReference() throws {
        try Golden.check("afa_tiny_96_seed0", teacherForced: false, prefixes: ["fwd.", "cam.", "rw.", "par.", "label."], minimumKeys: 43)
    }

    func testTeacherForcedLossesGradientsAndStepMatchReference() throws {
        // 8 losses, 192 gradients, 195 state-dict entries after the step, the 4 group learning rates
        try Golden.check("afa_tiny_96_seed0", teacherForced: true, prefixes: ["loss.", "grad.", "step1.", "opt."], minimumKeys: 396)
    }

    func testPARUnit() throws {
        try Golden.check("par_unit_seed0", teacherForced: false, prefixes: [], minimumKeys: 8)
    }

    func testRandomWalkUnit() throws {
        try Golden.check("rw_unit_seed0", teacherForced: false, prefixes: [], minimumKeys: 9)
    }

    func testAdamWUnit() throws {
        try Golden.check("adamw_unit_seed0", teacherForced: false, prefixes: [], minimumKeys: 63)
    }
}

/// The same checks on cases with other shapes, class counts, head widths and training phases.
final class GoldenGeneralityTests: XCTestCase {
    let cases = ["nonsq_b3", "cls_phase_c6", "afflabel_phase"]

    func testFreeRunning() throws {
        for c in cases { try Golden.check(c, teacherForced: false, prefixes: ["fwd.", "cam.", "rw.", "par.", "label."], minimumKeys: 40) }
    }

    func testTeacherForced() throws {
        for c in cases { try Golden.check(c, teacherForced: true, prefixes: ["loss.", "grad.", "step1.", "opt."], minimumKeys: 300) }
    }
}
