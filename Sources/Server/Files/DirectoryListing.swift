import CSystemShims
import Glibc

/// `autoindex`: an HTML listing of a directory without an index file, built per request (listings are
/// not cached): names sorted, dotfiles left out, each name HTML-escaped in the text and
/// percent-encoded in its link.
enum DirectoryListing {
    /// The listing of the directory at `path` (NUL-terminated, relative to `root`) titled `title` (its
    /// URL path); nil when it cannot be opened or read.
    static func html(root: Int32, path: UnsafePointer<UInt8>, title: [UInt8]) -> [UInt8]? {
        let fd = BeneathRoot.open(root, path, flags: O_RDONLY | cs_O_DIRECTORY | cs_O_CLOEXEC)
        guard fd >= 0, let directory = fdopendir(fd) else {
            if fd >= 0 { closeDescriptor(fd) }
            return nil
        }
        var entries: [(name: [UInt8], isDirectory: Bool)] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            if name.first == UInt8(ascii: ".") { continue }  // dotfiles, "." and ".."
            var isDirectory = entry.pointee.d_type == UInt8(DT_DIR)
            if entry.pointee.d_type == UInt8(DT_UNKNOWN) || entry.pointee.d_type == UInt8(DT_LNK) {
                var info = stat()
                var terminated = name
                terminated.append(0)
                isDirectory = terminated.withUnsafeBufferPointer {
                    fstatat(dirfd(directory), UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), &info, 0) == 0
                } && info.st_mode & S_IFMT == S_IFDIR
            }
            entries.append((name, isDirectory))
        }
        closedir(directory)
        entries.sort { $0.name.lexicographicallyPrecedes($1.name) }

        var html = Array("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Index of ".utf8)
        appendEscapedHTML(title, to: &html)
        html += Array("</title></head>\n<body><h1>Index of ".utf8)
        appendEscapedHTML(title, to: &html)
        html += Array("</h1>\n<ul>\n".utf8)
        if title.count > 1 { html += Array("<li><a href=\"../\">../</a></li>\n".utf8) }
        for entry in entries {
            html += Array("<li><a href=\"".utf8)
            appendPercentEncoded(entry.name, to: &html)
            if entry.isDirectory { html.append(UInt8(ascii: "/")) }
            html += Array("\">".utf8)
            appendEscapedHTML(entry.name, to: &html)
            if entry.isDirectory { html.append(UInt8(ascii: "/")) }
            html += Array("</a></li>\n".utf8)
        }
        html += Array("</ul>\n</body></html>\n".utf8)
        return html
    }

    /// `&`, `<`, `>`, `"` and `'` as entities; bytes that are not UTF-8 text are shown as U+FFFD by the
    /// browser, never interpreted.
    static func appendEscapedHTML(_ name: [UInt8], to html: inout [UInt8]) {
        for byte in name {
            switch byte {
            case UInt8(ascii: "&"): html += Array("&amp;".utf8)
            case UInt8(ascii: "<"): html += Array("&lt;".utf8)
            case UInt8(ascii: ">"): html += Array("&gt;".utf8)
            case UInt8(ascii: "\""): html += Array("&quot;".utf8)
            case UInt8(ascii: "'"): html += Array("&#39;".utf8)
            default: html.append(byte)
            }
        }
    }

    /// Every byte outside the unreserved set as %XX.
    static func appendPercentEncoded(_ name: [UInt8], to html: inout [UInt8]) {
        let hex: StaticString = "0123456789ABCDEF"
        for byte in name {
            let safe = (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "~")
            if safe {
                html.append(byte)
            } else {
                html += [UInt8(ascii: "%"), hex.utf8Start[Int(byte >> 4)], hex.utf8Start[Int(byte & 15)]]
            }
        }
    }
}
