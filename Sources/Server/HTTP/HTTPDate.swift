import Glibc

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

    /// Writes `2026-11-27T09:46:15Z` (RFC 3339, UTC) for `seconds` since the epoch: the JSON log's time.
    static func writeISOTime(_ seconds: Int64, into writer: inout ByteWriter) {
        let (year, month, day, _, hour, minute, second) = civil(seconds)
        writer.appendDecimal(Int64(year))
        writer.append(byte: 45)
        two(month, &writer)
        writer.append(byte: 45)
        two(day, &writer)
        writer.append(byte: 84)
        two(hour, &writer)
        writer.append(byte: 58)
        two(minute, &writer)
        writer.append(byte: 58)
        two(second, &writer)
        writer.append(byte: 90)
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

extension HTTPDate {
    /// Seconds since the epoch for an HTTP-date (RFC 9110 section 5.6.7) in any of its three forms:
    /// IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT` and asctime
    /// `Sun Nov  6 08:49:37 1994`. Nil for anything else; the caller then ignores the field.
    static func parse(_ bytes: UnsafeRawBufferPointer, _ span: ByteSpan) -> Int64? {
        var reader = DateReader(bytes: bytes, index: span.start, end: span.end)
        guard let comma = reader.find(44) else { return reader.asctime() }  // no comma: asctime
        reader.index = comma + 1
        guard reader.skip(32) else { return nil }
        if reader.end - reader.index == 24 {
            // IMF-fixdate: DD SP Mon SP YYYY SP hh:mm:ss SP GMT
            guard let day = reader.number(2), reader.skip(32), let month = reader.month(), reader.skip(32),
                  let year = reader.number(4), reader.skip(32), let time = reader.time(), reader.gmt()
            else { return nil }
            return epochSeconds(year: year, month: month, day: day, time: time)
        }
        // RFC 850: DD-Mon-YY SP hh:mm:ss SP GMT; a two-digit year more than 50 years ahead is in the past.
        guard let day = reader.number(2), reader.skip(45), let month = reader.month(), reader.skip(45),
              let shortYear = reader.number(2), reader.skip(32), let time = reader.time(), reader.gmt()
        else { return nil }
        var year = 1900 + shortYear
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        let currentYear = civil(Int64(now.tv_sec)).0
        while year < currentYear - 49 { year += 100 }
        return epochSeconds(year: year, month: month, day: day, time: time)
    }

    /// Days since the epoch for a Gregorian date (Howard Hinnant's days_from_civil), plus the time.
    static func epochSeconds(year: Int, month: Int, day: Int, time: Int) -> Int64? {
        guard (1...12).contains(month), (1...31).contains(day) else { return nil }
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let m = Int64(month)
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return days * 86400 + Int64(time)
    }
}

/// A cursor over the bytes of a date, for `HTTPDate.parse`.
private struct DateReader {
    let bytes: UnsafeRawBufferPointer
    var index: Int
    let end: Int

    func find(_ byte: UInt8) -> Int? {
        var position = index
        while position < end {
            if bytes[position] == byte { return position }
            position += 1
        }
        return nil
    }

    mutating func skip(_ byte: UInt8) -> Bool {
        guard index < end, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    mutating func number(_ digits: Int) -> Int? {
        guard end - index >= digits else { return nil }
        var value = 0
        for _ in 0..<digits {
            let byte = bytes[index]
            guard byte >= 48 && byte <= 57 else { return nil }
            value = value * 10 + Int(byte - 48)
            index += 1
        }
        return value
    }

    mutating func month() -> Int? {
        guard end - index >= 3 else { return nil }
        let names: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"
        for month in 0..<12 {
            let name = names.utf8Start + month * 3
            if bytes[index] == name[0] && bytes[index + 1] == name[1] && bytes[index + 2] == name[2] {
                index += 3
                return month + 1
            }
        }
        return nil
    }

    /// hh:mm:ss as seconds of the day.
    mutating func time() -> Int? {
        guard let hour = number(2), skip(58), let minute = number(2), skip(58), let second = number(2),
              hour < 24, minute < 60, second <= 60 else { return nil }
        return hour * 3600 + minute * 60 + min(second, 59)
    }

    mutating func gmt() -> Bool {
        skip(32) && skip(71) && skip(77) && skip(84) && index == end
    }

    /// `Sun Nov  6 08:49:37 1994` (the day is space-padded).
    mutating func asctime() -> Int64? {
        guard end - index == 24 else { return nil }
        index += 3
        guard skip(32), let month = month(), skip(32) else { return nil }
        let day: Int
        if bytes[index] == 32 {
            index += 1
            guard let digit = number(1) else { return nil }
            day = digit
        } else {
            guard let digits = number(2) else { return nil }
            day = digits
        }
        guard skip(32), let time = time(), skip(32), let year = number(4), index == end else { return nil }
        return HTTPDate.epochSeconds(year: year, month: month, day: day, time: time)
    }
}
