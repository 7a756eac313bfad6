import XCTest
@testable import RWKVX

final class CheckpointReadTests: XCTestCase {
    func testPthAndSafetensorsAgree() throws {
        let pth = try Checkpoint.open(path: fixture("rwkvx-tiny.pth"))
        let st = try Checkpoint.open(path: fixture("rwkvx-tiny.safetensors"))
        XCTAssertEqual(pth.format, .pytorch)
        XCTAssertEqual(st.format, .safetensors)
        XCTAssertEqual(pth.tensorNames, st.tensorNames)
        XCTAssertEqual(pth.tensorNames.count, 157)
        for name in pth.tensorNames {
            let a = try pth.tensor(name)
            let b = try st.tensor(name)
            XCTAssertEqual(a.shape, b.shape, name)
            XCTAssertEqual(a.dtype, b.dtype, name)
            XCTAssertEqual(a.toFloat32(), b.toFloat32(), name)
        }
    }
}

func fixture(_ name: String) -> String {
    Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent(name).path
}
