// Decoder for the one-line Python string and bytes literals that the RWKV World
// vocabulary file uses, such as 'a', "'s", '\u200b', b'\xe0\xa4'.
//
// It follows the Python 3 lexical rules for short literals: a `str` literal
// becomes its UTF-8 bytes, and a `bytes` literal becomes its bytes. Escapes are
// \\ \' \" \a \b \f \n \r \t \v, \ooo (octal), \xhh, and in `str` only \uXXXX
// and \UXXXXXXXX. An unrecognised escape keeps its backslash, as in Python.
// Left out: \N{name}, raw (r'') and other prefixes, implicit concatenation and
// triple quotes, none of which the vocabulary uses. They are rejected.

/// Reason a vocabulary literal could not be decoded.
struct PythonLiteralError: Error {
    let reason: String
}

enum PythonLiteral {
    /// Decodes the literal `text` (no surrounding whitespace) to bytes.
    static func decode(_ text: ArraySlice<UInt8>) throws(PythonLiteralError) -> [UInt8] {
        var start = text.startIndex
        var isBytes = false
        if start < text.endIndex, text[start] == UInt8(ascii: "b") || text[start] == UInt8(ascii: "B") {
            isBytes = true
            start += 1
        }

        guard start < text.endIndex, text[start] == UInt8(ascii: "'") || text[start] == UInt8(ascii: "\"") else {
            throw PythonLiteralError(reason: "literal must start with ', \", b' or b\"")
        }
        let quote = text[start]
        let end = text.endIndex - 1
        guard end > start, text[end] == quote else {
            throw PythonLiteralError(reason: "literal is not closed by its opening quote")
        }

        var output: [UInt8] = []
        output.reserveCapacity(end - start)
        var i = start + 1
        while i < end {
            let byte = text[i]
            if byte == quote {
                throw PythonLiteralError(reason: "unescaped quote inside the literal at column \(i - text.startIndex + 1)")
            }
            if byte != UInt8(ascii: "\\") {
                if isBytes && byte >= 0x80 {
                    throw PythonLiteralError(reason: "bytes literal contains a non-ASCII character")
                }
                // A str literal's own characters are already UTF-8 in the file.
                output.append(byte)
                i += 1
                continue
            }

            // Escape sequence: `i` is at the backslash.
            guard i + 1 < end else {
                throw PythonLiteralError(reason: "literal ends with a lone backslash")
            }
            let code = text[i + 1]
            i += 2
            switch code {
            case UInt8(ascii: "\\"): output.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "'"): output.append(UInt8(ascii: "'"))
            case UInt8(ascii: "\""): output.append(UInt8(ascii: "\""))
            case UInt8(ascii: "a"): output.append(0x07)
            case UInt8(ascii: "b"): output.append(0x08)
            case UInt8(ascii: "f"): output.append(0x0C)
            case UInt8(ascii: "n"): output.append(0x0A)
            case UInt8(ascii: "r"): output.append(0x0D)
            case UInt8(ascii: "t"): output.append(0x09)
            case UInt8(ascii: "v"): output.append(0x0B)

            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                // Up to three octal digits, the first already read.
                var value = UInt32(code - UInt8(ascii: "0"))
                var digits = 1
                while digits < 3, i < end, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(text[i]) {
                    value = value * 8 + UInt32(text[i] - UInt8(ascii: "0"))
                    i += 1
                    digits += 1
                }
                try appendScalar(value, isBytes: isBytes, to: &output)

            case UInt8(ascii: "x"):
                let value = try hexValue(text, at: i, digits: 2, end: end)
                i += 2
                try appendScalar(value, isBytes: isBytes, to: &output)

            case UInt8(ascii: "u") where !isBytes:
                let value = try hexValue(text, at: i, digits: 4, end: end)
                i += 4
                try appendScalar(value, isBytes: false, to: &output)

            case UInt8(ascii: "U") where !isBytes:
                let value = try hexValue(text, at: i, digits: 8, end: end)
                i += 8
                try appendScalar(value, isBytes: false, to: &output)

            case UInt8(ascii: "N") where !isBytes:
                throw PythonLiteralError(reason: "\\N{...} escapes are not supported")

            default:
                // Python keeps unknown escapes (and \u, \U, \N in bytes) verbatim.
                if isBytes && code >= 0x80 {
                    throw PythonLiteralError(reason: "bytes literal contains a non-ASCII character")
                }
                output.append(UInt8(ascii: "\\"))
                output.append(code)
            }
        }
        return output
    }

    /// Reads exactly `digits` hex digits starting at `index`.
    private static func hexValue(
        _ text: ArraySlice<UInt8>, at index: Int, digits: Int, end: Int
    ) throws(PythonLiteralError) -> UInt32 {
        guard index + digits <= end else {
            throw PythonLiteralError(reason: "truncated escape: expected \(digits) hex digits")
        }
        var value: UInt32 = 0
        for byte in text[index..<(index + digits)] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw PythonLiteralError(reason: "invalid hex digit in escape: expected \(digits) hex digits")
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    /// Appends an escaped value: one byte in a bytes literal, the UTF-8 encoding
    /// of the code point in a str literal.
    private static func appendScalar(
        _ value: UInt32, isBytes: Bool, to output: inout [UInt8]
    ) throws(PythonLiteralError) {
        if isBytes {
            guard value <= 0xFF else {
                throw PythonLiteralError(reason: "octal escape value \(value) is out of range 0...255 for bytes")
            }
            output.append(UInt8(value))
            return
        }
        // Surrogates fail here too: Python's str.encode("utf-8") rejects them.
        guard let scalar = Unicode.Scalar(value) else {
            throw PythonLiteralError(reason: "escape U+\(String(value, radix: 16, uppercase: true)) is not a Unicode scalar value, so it has no UTF-8 encoding")
        }
        output.append(contentsOf: UTF8.encode(scalar)!)
    }
}
