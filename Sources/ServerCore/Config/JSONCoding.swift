/// JSON for `Codable` values without Foundation: the configuration the supervisor passes its children
/// (`ConfigTransport`). The listener and the manager run from an executable without Foundation
/// (`webserver-core`), so the text both sides read and write is made here.
///
/// Enough JSON for what the configuration holds (objects, arrays, strings, integers, booleans, null;
/// numbers are kept as their text and read by the type asked for), in the form RFC 8259 gives.
package enum JSONCoding {
    /// The JSON text of `value`, keys in the order the type encodes them.
    package static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let root = EncodingNode()
        try value.encode(to: TreeEncoder(node: root, codingPath: []))
        var out: [UInt8] = []
        out.reserveCapacity(4096)
        root.write(into: &out)
        return out
    }

    /// A `T` from JSON text; throws `DecodingError` when the text is not JSON or does not fit `T`.
    package static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        var parser = JSONParser(bytes: bytes)
        let value = try parser.parseDocument()
        return try T(from: TreeDecoder(value: value, codingPath: []))
    }
}

// MARK: - The tree

/// A parsed JSON value. Numbers keep their text, so an Int64 or a UInt64 reads back exactly.
package enum JSONValue {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    package var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// What an encoder writes into: a scalar's text, or an array's or an object's nodes (in order). The
/// children are stored properties, so adding one does not copy its siblings.
package final class EncodingNode {
    package enum Kind { case unset, scalar, array, object }
    package var kind = Kind.unset
    package var scalar: [UInt8] = []
    package var elements: [EncodingNode] = []
    package var keys: [String] = []
    package var members: [String: EncodingNode] = [:]

    package func set(_ text: [UInt8]) {
        kind = .scalar
        scalar = text
    }

    package func makeObject() { kind = .object }

    package func makeArray() { kind = .array }

    /// The member `key` of this object (made, and placed last, when new).
    package func member(_ key: String) -> EncodingNode {
        precondition(kind == .object, "not an object")
        if let node = members[key] { return node }
        let node = EncodingNode()
        keys.append(key)
        members[key] = node
        return node
    }

    /// A new last element of this array.
    package func append() -> EncodingNode {
        precondition(kind == .array, "not an array")
        let node = EncodingNode()
        elements.append(node)
        return node
    }

    package var count: Int { kind == .array ? elements.count : 0 }

    package func write(into out: inout [UInt8]) {
        switch kind {
        case .unset:
            out += "{}".utf8
        case .scalar:
            out += scalar
        case .array:
            out.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                element.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object:
            out.append(UInt8(ascii: "{"))
            for (index, key) in keys.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                EncodingNode.quote(key, into: &out)
                out.append(UInt8(ascii: ":"))
                members[key]!.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    package static func quote(_ text: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += "\\\"".utf8
            case UInt8(ascii: "\\"): out += "\\\\".utf8
            case UInt8(ascii: "\n"): out += "\\n".utf8
            case UInt8(ascii: "\r"): out += "\\r".utf8
            case UInt8(ascii: "\t"): out += "\\t".utf8
            case 0..<0x20:
                let digits: [UInt8] = Array("0123456789abcdef".utf8)
                out += "\\u00".utf8
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 15)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

// MARK: - Encoding

package struct TreeEncoder: Encoder {
    package let node: EncodingNode
    package var codingPath: [any CodingKey]
    package var userInfo: [CodingUserInfoKey: Any] { [:] }

    package func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.makeObject()
        return KeyedEncodingContainer(KeyedEncoder<Key>(node: node, codingPath: codingPath))
    }

    package func unkeyedContainer() -> any UnkeyedEncodingContainer {
        node.makeArray()
        return UnkeyedEncoder(node: node, codingPath: codingPath)
    }

    package func singleValueContainer() -> any SingleValueEncodingContainer {
        ScalarEncoder(node: node, codingPath: codingPath)
    }
}

package struct KeyedEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
    package let node: EncodingNode
    package var codingPath: [any CodingKey]

    package mutating func encodeNil(forKey key: Key) throws {
        node.member(key.stringValue).set(Array("null".utf8))
    }

    package mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try value.encode(to: TreeEncoder(node: node.member(key.stringValue), codingPath: codingPath + [key]))
    }

    package mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        TreeEncoder(node: node.member(key.stringValue), codingPath: codingPath + [key]).container(keyedBy: keyType)
    }

    package mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        TreeEncoder(node: node.member(key.stringValue), codingPath: codingPath + [key]).unkeyedContainer()
    }

    package mutating func superEncoder() -> any Encoder {
        TreeEncoder(node: node.member("super"), codingPath: codingPath)
    }

    package mutating func superEncoder(forKey key: Key) -> any Encoder {
        TreeEncoder(node: node.member(key.stringValue), codingPath: codingPath + [key])
    }
}

package struct UnkeyedEncoder: UnkeyedEncodingContainer {
    package let node: EncodingNode
    package var codingPath: [any CodingKey]
    package var count: Int { node.count }

    package mutating func encodeNil() throws {
        node.append().set(Array("null".utf8))
    }

    package mutating func encode<T: Encodable>(_ value: T) throws {
        let path = codingPath + [IndexKey(count)]
        try value.encode(to: TreeEncoder(node: node.append(), codingPath: path))
    }

    package mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let path = codingPath + [IndexKey(count)]
        return TreeEncoder(node: node.append(), codingPath: path).container(keyedBy: keyType)
    }

    package mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let path = codingPath + [IndexKey(count)]
        return TreeEncoder(node: node.append(), codingPath: path).unkeyedContainer()
    }

    package mutating func superEncoder() -> any Encoder {
        let path = codingPath + [IndexKey(count)]
        return TreeEncoder(node: node.append(), codingPath: path)
    }
}

package struct ScalarEncoder: SingleValueEncodingContainer {
    package let node: EncodingNode
    package var codingPath: [any CodingKey]

    private func set(_ text: String) { node.set(Array(text.utf8)) }
    private func integer(_ value: some BinaryInteger) { set(String(value)) }

    package mutating func encodeNil() throws { set("null") }
    package mutating func encode(_ value: Bool) throws { set(value ? "true" : "false") }
    package mutating func encode(_ value: String) throws {
        var out: [UInt8] = []
        EncodingNode.quote(value, into: &out)
        node.set(out)
    }
    package mutating func encode(_ value: Double) throws {
        guard value.isFinite else {
            throw EncodingError.invalidValue(value, .init(codingPath: codingPath, debugDescription: "JSON has no \(value)"))
        }
        set(value.description)
    }
    package mutating func encode(_ value: Float) throws { try encode(Double(value)) }
    package mutating func encode(_ value: Int) throws { integer(value) }
    package mutating func encode(_ value: Int8) throws { integer(value) }
    package mutating func encode(_ value: Int16) throws { integer(value) }
    package mutating func encode(_ value: Int32) throws { integer(value) }
    package mutating func encode(_ value: Int64) throws { integer(value) }
    package mutating func encode(_ value: UInt) throws { integer(value) }
    package mutating func encode(_ value: UInt8) throws { integer(value) }
    package mutating func encode(_ value: UInt16) throws { integer(value) }
    package mutating func encode(_ value: UInt32) throws { integer(value) }
    package mutating func encode(_ value: UInt64) throws { integer(value) }
    package mutating func encode<T: Encodable>(_ value: T) throws {
        try value.encode(to: TreeEncoder(node: node, codingPath: codingPath))
    }
}

package struct IndexKey: CodingKey {
    package var stringValue: String { String(index) }
    package var intValue: Int? { index }
    package let index: Int
    package init(_ index: Int) { self.index = index }
    package init?(stringValue: String) { nil }
    package init?(intValue: Int) { index = intValue }
}

// MARK: - Decoding

package struct TreeDecoder: Decoder {
    package let value: JSONValue
    package var codingPath: [any CodingKey]
    package var userInfo: [CodingUserInfoKey: Any] { [:] }

    package func mismatch(_ expected: String) -> DecodingError {
        .typeMismatch(Any.self, .init(codingPath: codingPath, debugDescription: "expected \(expected), found \(value.kind)"))
    }

    package func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else { throw mismatch("an object") }
        return KeyedDecodingContainer(KeyedDecoder<Key>(members: members, codingPath: codingPath))
    }

    package func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch("an array") }
        return UnkeyedDecoder(elements: elements, codingPath: codingPath)
    }

    package func singleValueContainer() throws -> any SingleValueDecodingContainer {
        ScalarDecoder(decoder: self)
    }
}

package struct KeyedDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
    package let members: [String: JSONValue]
    package var codingPath: [any CodingKey]

    package var allKeys: [Key] { members.keys.compactMap { Key(stringValue: $0) } }

    package func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

    private func decoder(_ key: Key) throws -> TreeDecoder {
        guard let value = members[key.stringValue] else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no \"\(key.stringValue)\""))
        }
        return TreeDecoder(value: value, codingPath: codingPath + [key])
    }

    package func decodeNil(forKey key: Key) throws -> Bool {
        if case .null = try decoder(key).value { return true }
        return false
    }

    package func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try T(from: decoder(key))
    }

    package func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try decoder(key).container(keyedBy: type)
    }

    package func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try decoder(key).unkeyedContainer()
    }

    package func superDecoder() throws -> any Decoder {
        TreeDecoder(value: members["super"] ?? .null, codingPath: codingPath)
    }

    package func superDecoder(forKey key: Key) throws -> any Decoder {
        try decoder(key)
    }
}

package struct UnkeyedDecoder: UnkeyedDecodingContainer {
    package let elements: [JSONValue]
    package var codingPath: [any CodingKey]
    package var currentIndex = 0
    package var count: Int? { elements.count }
    package var isAtEnd: Bool { currentIndex >= elements.count }

    package init(elements: [JSONValue], codingPath: [any CodingKey]) {
        self.elements = elements
        self.codingPath = codingPath
    }

    private mutating func next() throws -> TreeDecoder {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(Any.self, .init(codingPath: codingPath, debugDescription: "the array ends at \(currentIndex)"))
        }
        defer { currentIndex += 1 }
        return TreeDecoder(value: elements[currentIndex], codingPath: codingPath + [IndexKey(currentIndex)])
    }

    package mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, case .null = elements[currentIndex] else { return false }
        currentIndex += 1
        return true
    }

    package mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try T(from: next())
    }

    package mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }

    package mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try next().unkeyedContainer()
    }

    package mutating func superDecoder() throws -> any Decoder {
        try next()
    }
}

package struct ScalarDecoder: SingleValueDecodingContainer {
    package let decoder: TreeDecoder
    package var codingPath: [any CodingKey] { decoder.codingPath }

    package func decodeNil() -> Bool {
        if case .null = decoder.value { return true }
        return false
    }

    package func decode(_ type: Bool.Type) throws -> Bool {
        guard case .bool(let value) = decoder.value else { throw decoder.mismatch("a boolean") }
        return value
    }

    package func decode(_ type: String.Type) throws -> String {
        guard case .string(let value) = decoder.value else { throw decoder.mismatch("a string") }
        return value
    }

    private func number<T: LosslessStringConvertible>(_ type: T.Type) throws -> T {
        guard case .number(let text) = decoder.value else { throw decoder.mismatch("a number") }
        guard let value = T(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "\(text) does not fit \(T.self)"))
        }
        return value
    }

    package func decode(_ type: Double.Type) throws -> Double { try number(Double.self) }
    package func decode(_ type: Float.Type) throws -> Float { try number(Float.self) }
    package func decode(_ type: Int.Type) throws -> Int { try number(Int.self) }
    package func decode(_ type: Int8.Type) throws -> Int8 { try number(Int8.self) }
    package func decode(_ type: Int16.Type) throws -> Int16 { try number(Int16.self) }
    package func decode(_ type: Int32.Type) throws -> Int32 { try number(Int32.self) }
    package func decode(_ type: Int64.Type) throws -> Int64 { try number(Int64.self) }
    package func decode(_ type: UInt.Type) throws -> UInt { try number(UInt.self) }
    package func decode(_ type: UInt8.Type) throws -> UInt8 { try number(UInt8.self) }
    package func decode(_ type: UInt16.Type) throws -> UInt16 { try number(UInt16.self) }
    package func decode(_ type: UInt32.Type) throws -> UInt32 { try number(UInt32.self) }
    package func decode(_ type: UInt64.Type) throws -> UInt64 { try number(UInt64.self) }
    package func decode<T: Decodable>(_ type: T.Type) throws -> T { try T(from: decoder) }
}

// MARK: - Parsing

/// RFC 8259's grammar, nested at most `maxDepth` deep.
package struct JSONParser {
    package let bytes: [UInt8]
    package var index = 0
    package static let maxDepth = 128

    package init(bytes: [UInt8]) { self.bytes = bytes }

    package mutating func parseDocument() throws -> JSONValue {
        let value = try parseValue(depth: 0)
        skipSpace()
        guard index == bytes.count else { throw failure("text after the value") }
        return value
    }

    package func failure(_ what: String) -> DecodingError {
        .dataCorrupted(.init(codingPath: [], debugDescription: "not JSON at byte \(index): \(what)"))
    }

    package mutating func skipSpace() {
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 {
            index += 1
        }
    }

    package mutating func expect(_ word: String) throws {
        for byte in word.utf8 {
            guard index < bytes.count, bytes[index] == byte else { throw failure("expected \(word)") }
            index += 1
        }
    }

    package mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth < JSONParser.maxDepth else { throw failure("nested too deep") }
        skipSpace()
        guard index < bytes.count else { throw failure("the text ends") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            index += 1
            var members: [String: JSONValue] = [:]
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw failure("expected a key") }
                let key = try parseString()
                skipSpace()
                try expect(":")
                members[key] = try parseValue(depth: depth + 1)
                skipSpace()
                guard index < bytes.count else { throw failure("the object is not closed") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                try expect("}")
                return .object(members)
            }
        case UInt8(ascii: "["):
            index += 1
            var elements: [JSONValue] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            }
            while true {
                elements.append(try parseValue(depth: depth + 1))
                skipSpace()
                guard index < bytes.count else { throw failure("the array is not closed") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                try expect("]")
                return .array(elements)
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try expect("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expect("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expect("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = index
            index += 1
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"),
                     UInt8(ascii: "+"), UInt8(ascii: "-"):
                    index += 1
                    continue
                default: break
                }
                break
            }
            return .number(String(decoding: bytes[start..<index], as: UTF8.self))
        default:
            throw failure("unexpected byte \(bytes[index])")
        }
    }

    /// A string from its opening quote, escapes decoded.
    package mutating func parseString() throws -> String {
        index += 1
        var out: [UInt8] = []
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { throw failure("the string ends in an escape") }
                let escaped = bytes[index]
                index += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escaped)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        try expect("\\u")
                        let low = try parseHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw failure("a lone surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw failure("a lone surrogate") }
                    out += Array(String(Character(unicode)).utf8)
                default:
                    throw failure("an unknown escape")
                }
            case 0..<0x20:
                throw failure("a control character in a string")
            default:
                out.append(byte)
            }
        }
        throw failure("the string is not closed")
    }

    package mutating func parseHex4() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard index < bytes.count else { throw failure("the text ends in \\u") }
            let byte = bytes[index]
            index += 1
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw failure("not a hex digit")
            }
            value = value << 4 | digit
        }
        return value
    }
}
