import XCTest
import CKernels

final class KernelLevelTests: XCTestCase {
    func testLevelNames() {
        XCTAssertEqual(String(cString: rwkvx_level_name(Int32(RWKVX_LEVEL_SCALAR.rawValue))), "scalar")
    }
}
