// Short descriptions of JSON decoding failures for error messages, instead of
// Foundation's full DecodingError dump.
import Foundation

func jsonProblem(_ error: Error) -> String {
    func path(_ keys: [CodingKey]) -> String {
        keys.isEmpty ? "the top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
    guard let decoding = error as? DecodingError else { return "\(error)" }
    switch decoding {
    case .typeMismatch(let type, let context):
        return "\(path(context.codingPath)) should be \(type)"
    case .valueNotFound(let type, let context):
        return "\(path(context.codingPath)) is missing a \(type)"
    case .keyNotFound(let key, let context):
        return "missing key \"\(key.stringValue)\" in \(path(context.codingPath))"
    case .dataCorrupted(let context):
        return context.codingPath.isEmpty ? "not valid JSON" : "invalid value at \(path(context.codingPath))"
    @unknown default:
        return "\(error)"
    }
}
