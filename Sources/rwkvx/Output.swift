// Unbuffered writes to stdout and stderr, so that streamed text and progress show
// at once even on a pipe, and nothing is lost if the process is killed.
import Foundation

enum Output {
    static func out(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    static func err(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
