import Foundation
import XCTest
import RWKVX

/// Every reference scenario, run in process, against the authors' PyTorch outputs.
final class ReferenceFixtureTests: XCTestCase {
    func runScenario(_ name: String, checkpointKey: String? = nil) throws -> [NamedTensor] {
        var scenario = try Scenario(contentsOf: Fixtures.path(name + ".scenario.json"))
        if let checkpointKey { scenario.checkpoint = Fixtures.path(checkpointKey) }
        let model = try Model(path: scenario.checkpoint, options: scenario.attention)
        return try scenario.run(on: LocalEngine(model: model))
    }

    func testPackageScenariosMatchReference() throws {
        for name in Fixtures.packageScenarios {
            let outputs = try runScenario(name)
            assertMatchesReference(outputs, try Fixtures.expected(name), tolerance: 1e-4, name)
        }
    }

    func testSafetensorsCheckpointGivesSameOutputs() throws {
        let pth = try runScenario("rwkvx-tiny/short")
        let st = try runScenario("rwkvx-tiny/short", checkpointKey: "rwkvx-tiny/rwkvx-tiny.safetensors")
        for (a, b) in zip(pth, st) {
            XCTAssertEqual(a.name, b.name)
            XCTAssertEqual(a.values, b.values, a.name)
        }
    }

    func testMobaPrefillScenarioIsRejected() {
        XCTAssertThrowsError(try Scenario(contentsOf: Fixtures.path("rwkvx-tiny/moba-prefill.scenario.json"))) { error in
            XCTAssertTrue("\(error)".contains("prefill_attention"), "\(error)")
        }
    }
}
