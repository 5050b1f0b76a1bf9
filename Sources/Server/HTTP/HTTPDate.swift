/// IMF-fixdate (RFC 9110 section 5.6.7) and the access log's time, computed without the C library.
enum HTTPDate {
    static let length = 29

    /// Writes `Sun, 06 Nov 1994 08:49:37 GMT` for `seconds` since the epoch.
    static func write(_ seconds: Int64, into writer: inout ByteWriter) {
        let (year, month, day, weekday, hour, minute, second) = civil(seconds)
        let weekdays: StaticString = "ThuFriSatSunMonTueWed"
        let months: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"
        writer.append(weekdays.utf8Start + weekday * 3, 3)
        writer.append(", ")
        two(day, &writer)
        writer.append(byte: 32)
        writer.append(months.utf8Start + (month - 1) * 3, 3)
        writer.append(byte: 32)
        writer.appendDecimal(Int64(year))
        writer.append(byte: 32)
        two(hour, &writer)
        writer.append(byte: 58)
        two(minute, &writer)
        writer.append(byte: 58)
        two(second, &writer)
        writer.append(" GMT")
    }

    /// Writes the access log's `27/Nov/2026:09:46:15 +0000` for `seconds` since the epoch.
    static func writeLogTime(_ seconds: Int64, into writer: inout ByteWriter) {
        let (year, month, day, _, hour, minute, second) = civil(seconds)
        let months: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"
        two(day, &writer)
        writer.append(byte: 47)
        writer.append(months.utf8Start + (month - 1) * 3, 3)
        writer.append(byte: 47)
        writer.appendDecimal(Int64(year))
        writer.append(byte: 58)
        two(hour, &writer)
        writer.append(byte: 58)
        two(minute, &writer)
        writer.append(byte: 58)
        two(second, &writer)
        writer.append(" +0000")
    }

    @inline(__always)
    private static func two(_ value: Int, _ writer: inout ByteWriter) {
        writer.append(byte: UInt8(48 + value / 10))
        writer.append(byte: UInt8(48 + value % 10))
    }

    /// Gregorian calendar fields for UTC `seconds` (Howard Hinnant's days-from-civil inverse).
    /// Weekday 0 is Thursday, the epoch's.
    static func civil(_ seconds: Int64) -> (Int, Int, Int, Int, Int, Int, Int) {
        var days = seconds / 86400
        var rest = seconds % 86400
        if rest < 0 {
            rest += 86400
            days -= 1
        }
        let weekday = Int(((days % 7) + 7) % 7)
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = Int(doy - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yoe + era * 400 + (month <= 2 ? 1 : 0))
        return (year, month, day, weekday, Int(rest / 3600), Int(rest % 3600 / 60), Int(rest % 60))
    }
}
