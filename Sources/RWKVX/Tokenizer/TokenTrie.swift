// Byte trie for greedy longest-match encoding, stored as flat arrays.
//
// Nodes are laid out breadth first, so the children of a node are contiguous
// and sorted by byte: a child lookup is a binary search over `edgeByte` in
// `firstChild ..< firstChild + childCount`. Building from the sorted token list
// needs no per-node allocation, which keeps loading 65529 tokens fast.

struct TokenTrie: Sendable {
    /// Byte on the edge into each node, indexed by node. Unused for the root (node 0).
    private var edgeByte: [UInt8] = []
    /// Index of each node's first child, or 0 when it has none.
    private var firstChild: [Int32] = []
    /// Number of children of each node.
    private var childCount: [UInt16] = []
    /// Token id ending at each node, or -1.
    private var tokenId: [Int32] = []

    /// Builds the trie over `tokens`, where `tokens[i]` is the byte string of id `ids[i]`.
    /// Byte strings must be distinct and non-empty.
    init(tokens: [ArraySlice<UInt8>], ids: [Int32]) {
        precondition(tokens.count == ids.count)
        let order = tokens.indices.sorted { tokens[$0].lexicographicallyPrecedes(tokens[$1]) }

        edgeByte = [0]
        firstChild = [0]
        childCount = [0]
        tokenId = [-1]

        // Work list, breadth first: a node and the range of `order` whose tokens
        // start with the node's prefix of length `depth`.
        struct Pending { var node: Int; var lower: Int; var upper: Int; var depth: Int }
        var queue = [Pending(node: 0, lower: 0, upper: order.count, depth: 0)]
        var head = 0
        while head < queue.count {
            let item = queue[head]
            head += 1
            var lower = item.lower

            // The token equal to the prefix itself sorts first in its range.
            if lower < item.upper, tokens[order[lower]].count == item.depth {
                tokenId[item.node] = ids[order[lower]]
                lower += 1
            }
            guard lower < item.upper else { continue }

            // One child per distinct byte at position `depth`.
            firstChild[item.node] = Int32(edgeByte.count)
            var groupStart = lower
            while groupStart < item.upper {
                let token = tokens[order[groupStart]]
                let byte = token[token.startIndex + item.depth]
                var groupEnd = groupStart + 1
                while groupEnd < item.upper {
                    let next = tokens[order[groupEnd]]
                    if next[next.startIndex + item.depth] != byte { break }
                    groupEnd += 1
                }
                let child = edgeByte.count
                edgeByte.append(byte)
                firstChild.append(0)
                childCount.append(0)
                tokenId.append(-1)
                childCount[item.node] += 1
                queue.append(Pending(node: child, lower: groupStart, upper: groupEnd, depth: item.depth + 1))
                groupStart = groupEnd
            }
        }
    }

    var nodeCount: Int { edgeByte.count }

    /// Returns the child of `node` along `byte`, or nil.
    @inline(__always)
    func child(of node: Int, byte: UInt8) -> Int? {
        var lower = Int(firstChild[node])
        var upper = lower + Int(childCount[node])
        while lower < upper {
            let middle = (lower + upper) >> 1
            let value = edgeByte[middle]
            if value == byte { return middle }
            if value < byte { lower = middle + 1 } else { upper = middle }
        }
        return nil
    }

    /// Finds the longest token that is a prefix of `bytes[start...]`.
    /// Returns its id and length, or nil when not even one byte matches.
    @inline(__always)
    func longestMatch(in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> (id: Int, length: Int)? {
        var node = 0
        var best: (id: Int, length: Int)? = nil
        var index = start
        while index < bytes.count, let next = child(of: node, byte: bytes[index]) {
            node = next
            index += 1
            let id = tokenId[node]
            if id >= 0 { best = (Int(id), index - start) }
        }
        return best
    }
}
