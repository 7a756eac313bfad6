// Errors of the RWKV World tokenizer: vocabulary loading and decoding.

/// Failure to load a vocabulary or to decode token ids.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    /// The vocabulary file could not be read at all.
    case vocabularyUnreadable(path: String, reason: String)
    /// One line of the vocabulary file is malformed. `line` counts from 1.
    case invalidVocabularyLine(path: String, line: Int, reason: String)
    /// The vocabulary is well formed line by line but unusable as a whole.
    case invalidVocabulary(path: String, reason: String)
    /// The vocabulary file is missing from the RWKVX package resources.
    case bundledVocabularyMissing(name: String)
    /// A token id to decode is not in the vocabulary.
    case unknownTokenId(Int, validIds: ClosedRange<Int>)

    public var description: String {
        switch self {
        case let .vocabularyUnreadable(path, reason):
            return "cannot read vocabulary file \(path): \(reason)"
        case let .invalidVocabularyLine(path, line, reason):
            return "invalid vocabulary file \(path), line \(line): \(reason)"
        case let .invalidVocabulary(path, reason):
            return "invalid vocabulary file \(path): \(reason)"
        case let .bundledVocabularyMissing(name):
            return "vocabulary resource \(name) is missing from the RWKVX bundle; rebuild the package or pass a vocabulary path"
        case let .unknownTokenId(id, validIds):
            return "unknown token id \(id): valid ids are \(validIds.lowerBound)...\(validIds.upperBound)"
        }
    }
}
