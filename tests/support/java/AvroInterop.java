/*
 * The ledger's bytes read and written by Apache Avro for Java, the reference implementation.
 * Run by tests/test_avro_java.py (compiled and run by tests/support/avro_java.py); one file, no build tool.
 *
 *   decode SCHEMA_DIR FILE
 *       FILE: one message a line, "EventType<TAB>base64 of its Avro single-object bytes" (the type
 *       caseledger.intake.IntakeRecord reads an intake record).
 *       Every schema of the ledger (each event schema parsed after caseledger.Envelope.avsc, the
 *       retired versions of history/ too) goes into a SchemaStore.Cache; each message is decoded by
 *       a BinaryMessageDecoder whose reader is the current schema of its type. Prints one JSON
 *       line a message: {"type": T, "record": {...}} or {"type": T, "error": CLASS, "message": M}.
 *       JSON: bytes as base64, logical types as their plain values (timestamp-micros as a long,
 *       uuid as its string; both checked through Avro's own conversions first). Exit 3 if any failed.
 *   decode --legacy SCHEMA_DIR FILE
 *       The same, also reading messages whose header carries the fingerprint caseledger wrote
 *       before the standard one (events stored before issue 14's fix): their body is read by a
 *       RawMessageDecoder with the writer schema that legacy fingerprint names.
 *   fingerprint SCHEMA_DIR
 *       "Name<TAB>fingerprint<TAB>parsing canonical form" for every current event schema, the
 *       intake schema and every retired version (named history/FILE); fingerprint = the 8 bytes single-object encoding writes (CRC-64-AVRO of the
 *       Parsing Canonical Form, little-endian), in hex.
 *   encode-intake SCHEMA_FILE JSON_FILE
 *       Builds a GenericRecord of SCHEMA_FILE from the JSON object (fields left out take their
 *       schema default; a union value is null, {"BranchName": value}, or a value of the first branch
 *       it fits; timestamp-micros as micros or an ISO-8601 instant; bytes as base64) and prints the
 *       base64 of what BinaryMessageEncoder writes for it.
 *   compat SCHEMA_DIR
 *       For every current event schema and each of its retired versions in history/:
 *       "Name<TAB>retired file<TAB>COMPATIBLE|INCOMPATIBLE<TAB>description" from
 *       SchemaCompatibility.checkReaderWriterCompatibility(current, retired). Exit 1 if any is not.
 *
 * Exit 2: usage or unreadable input (the message is on stderr).
 */

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.UUID;
import java.util.stream.Stream;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.LogicalType;
import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.data.TimeConversions;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericEnumSymbol;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.avro.message.RawMessageDecoder;
import org.apache.avro.message.SchemaStore;

public final class AvroInterop {
  static final String ENVELOPE_FILE = "caseledger.Envelope.avsc";
  static final String INTAKE_NAME = "caseledger.intake.IntakeRecord";
  static final String INTAKE_FILE = "intake/" + INTAKE_NAME + ".avsc";
  static final PrintStream OUT = new PrintStream(System.out, false, StandardCharsets.UTF_8);

  /** A bad invocation or input: exit 2 with its message. */
  static final class UsageError extends Exception {
    private static final long serialVersionUID = 1L;

    UsageError(String message) {
      super(message);
    }
  }

  public static void main(String[] args) throws Exception {
    int code;
    try {
      if (args.length == 0) {
        throw new UsageError("usage: AvroInterop decode|fingerprint|encode-intake|compat ARGS...");
      }
      code =
          switch (args[0]) {
            case "decode" -> args.length > 1 && args[1].equals("--legacy")
                ? decode(arg(args, 2), arg(args, 3), true)
                : decode(arg(args, 1), arg(args, 2), false);
            case "fingerprint" -> fingerprint(arg(args, 1));
            case "encode-intake" -> encodeIntake(arg(args, 1), arg(args, 2));
            case "compat" -> compat(arg(args, 1));
            default -> throw new UsageError("unknown subcommand " + args[0]);
          };
    } catch (UsageError error) {
      System.err.println("AvroInterop: " + error.getMessage());
      code = 2;
    }
    OUT.flush();
    System.exit(code);
  }

  static Path arg(String[] args, int index) throws UsageError {
    if (args.length <= index) {
      throw new UsageError(args[0] + ": missing argument " + index);
    }
    return Path.of(args[index]);
  }

  // -- the ledger's schemas -------------------------------------------------------------------

  /** An event schema parsed the way the ledger means it: the envelope first, so its name resolves. */
  static Schema parseEvent(Path schemaDir, Path file) throws IOException {
    return parseEventWith(schemaDir.resolve(ENVELOPE_FILE), file);
  }

  static Schema parseEventWith(Path envelopeFile, Path file) throws IOException {
    Schema.Parser parser = new Schema.Parser();
    parser.parse(envelopeFile.toFile());
    return parser.parse(file.toFile());
  }

  /** Retired envelope versions (history/caseledger.Envelope.FINGERPRINT.avsc), in file order. */
  static List<Path> retiredEnvelopes(Path schemaDir) throws IOException {
    Path dir = schemaDir.resolve("history");
    if (!Files.isDirectory(dir)) {
      return List.of();
    }
    try (Stream<Path> files = Files.list(dir)) {
      return files.filter(p -> p.getFileName().toString().startsWith("caseledger.Envelope.")).sorted().toList();
    }
  }

  /** Every event schema version (current and retired) parsed with every retired envelope: older history. */
  static List<Schema> withRetiredEnvelopes(Path schemaDir) throws IOException {
    List<Schema> schemas = new ArrayList<>();
    List<Path> events = new ArrayList<>(avscFiles(schemaDir));
    events.addAll(avscFiles(schemaDir.resolve("history")));
    for (Path envelope : retiredEnvelopes(schemaDir)) {
      for (Path file : events) {
        schemas.add(parseEventWith(envelope, file));
      }
    }
    return schemas;
  }

  static List<Path> avscFiles(Path dir) throws IOException {
    if (!Files.isDirectory(dir)) {
      return List.of();
    }
    try (Stream<Path> files = Files.list(dir)) {
      return files
          .filter(p -> p.getFileName().toString().endsWith(".avsc"))
          .filter(p -> !p.getFileName().toString().startsWith("caseledger.Envelope."))
          .sorted()
          .toList();
    }
  }

  /** The event type of a schema file: "CaseOpened.avsc" and "CaseOpened.4b8c….avsc" give CaseOpened. */
  static String typeName(Path file) {
    String name = file.getFileName().toString();
    return name.substring(0, name.indexOf('.'));
  }

  /** Current event schemas by event type. */
  static Map<String, Schema> currentSchemas(Path schemaDir) throws IOException, UsageError {
    if (!Files.isRegularFile(schemaDir.resolve(ENVELOPE_FILE))) {
      throw new UsageError(schemaDir + " holds no " + ENVELOPE_FILE);
    }
    Map<String, Schema> current = new TreeMap<>();
    for (Path file : avscFiles(schemaDir)) {
      current.put(typeName(file), parseEvent(schemaDir, file));
    }
    return current;
  }

  /** Retired versions by file name (history/Name.fingerprint.avsc), in file order. */
  static Map<String, Schema> retiredSchemas(Path schemaDir) throws IOException {
    Map<String, Schema> retired = new TreeMap<>();
    for (Path file : avscFiles(schemaDir.resolve("history"))) {
      retired.put(file.getFileName().toString(), parseEvent(schemaDir, file));
    }
    return retired;
  }

  /** The 8 bytes single-object encoding writes after C3 01: CRC-64-AVRO of the PCF, little-endian. */
  static String fingerprintHex(Schema schema) {
    long fp = SchemaNormalization.parsingFingerprint64(schema);
    return HexFormat.of().formatHex(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(fp).array());
  }

  /**
   * The fingerprint caseledger wrote before the standard one, as the decoder reads it from the
   * header (a little-endian long): CRC-64-AVRO of the canonical form with the envelope left as a
   * name ("caseledger.Envelope"), its 8 bytes in big-endian order.
   */
  static long legacyFingerprint(Schema schema, Schema envelope) {
    String full = SchemaNormalization.toParsingForm(schema);
    String inline = SchemaNormalization.toParsingForm(envelope);
    int at = full.indexOf(inline);
    String named = at < 0 ? full
        : full.substring(0, at) + "\"" + envelope.getFullName() + "\"" + full.substring(at + inline.length());
    return Long.reverseBytes(SchemaNormalization.fingerprint64(named.getBytes(StandardCharsets.UTF_8)));
  }

  // -- fingerprint ----------------------------------------------------------------------------

  static int fingerprint(Path schemaDir) throws IOException, UsageError {
    for (Map.Entry<String, Schema> entry : currentSchemas(schemaDir).entrySet()) {
      printFingerprint(entry.getKey(), entry.getValue());
    }
    Path intake = schemaDir.resolve(INTAKE_FILE);
    if (Files.isRegularFile(intake)) {
      printFingerprint(INTAKE_NAME, new Schema.Parser().parse(intake.toFile()));
    }
    for (Map.Entry<String, Schema> entry : retiredSchemas(schemaDir).entrySet()) {
      printFingerprint("history/" + entry.getKey(), entry.getValue());
    }
    return 0;
  }

  static void printFingerprint(String name, Schema schema) {
    OUT.println(name + "\t" + fingerprintHex(schema) + "\t" + SchemaNormalization.toParsingForm(schema));
  }

  // -- decode ---------------------------------------------------------------------------------

  static int decode(Path schemaDir, Path messages, boolean legacy) throws IOException, UsageError {
    Map<String, Schema> current = currentSchemas(schemaDir);
    Map<String, Schema> retired = retiredSchemas(schemaDir);
    SchemaStore.Cache cache = new SchemaStore.Cache();
    current.values().forEach(cache::addSchema);
    retired.values().forEach(cache::addSchema);
    List<Schema> older = withRetiredEnvelopes(schemaDir);
    older.forEach(cache::addSchema);
    SchemaStore store = cache;
    // BinaryMessageDecoder cannot be given these through a SchemaStore: it files a found schema
    // under that schema's own (standard) fingerprint, then looks the header's up again (null).
    // So a legacy message's body is read by a RawMessageDecoder with the writer schema it names.
    Map<Long, Schema> byLegacy = new LinkedHashMap<>();
    if (legacy) {
      // Legacy fingerprints were only ever written with the first envelope.
      List<Path> oldEnvelopes = retiredEnvelopes(schemaDir);
      Path first = oldEnvelopes.isEmpty() ? schemaDir.resolve(ENVELOPE_FILE) : oldEnvelopes.get(0);
      Schema envelope = new Schema.Parser().parse(first.toFile());
      if (!oldEnvelopes.isEmpty()) {
        List<Path> events = new ArrayList<>(avscFiles(schemaDir));
        events.addAll(avscFiles(schemaDir.resolve("history")));
        for (Path file : events) {
          Schema schema = parseEventWith(first, file);
          byLegacy.put(legacyFingerprint(schema, envelope), schema);
        }
      }
      for (Schema schema : oldEnvelopes.isEmpty() ? current.values() : List.<Schema>of()) {
        byLegacy.put(legacyFingerprint(schema, envelope), schema);
      }
      for (Schema schema : oldEnvelopes.isEmpty() ? retired.values() : List.<Schema>of()) {
        byLegacy.put(legacyFingerprint(schema, envelope), schema);
      }
    }
    Map<String, BinaryMessageDecoder<GenericRecord>> decoders = new LinkedHashMap<>();
    for (Map.Entry<String, Schema> entry : current.entrySet()) {
      decoders.put(entry.getKey(), new BinaryMessageDecoder<>(GenericData.get(), entry.getValue(), store));
    }
    Path intake = schemaDir.resolve(INTAKE_FILE);
    if (Files.isRegularFile(intake)) {
      Schema schema = new Schema.Parser().parse(intake.toFile());
      cache.addSchema(schema);
      decoders.put(INTAKE_NAME, new BinaryMessageDecoder<>(GenericData.get(), schema, store));
    }
    int failed = 0;
    int lineNo = 0;
    JsonFactory json = new JsonFactory().disable(JsonGenerator.Feature.AUTO_CLOSE_TARGET);
    for (String line : Files.readAllLines(messages, StandardCharsets.UTF_8)) {
      lineNo++;
      if (line.isBlank()) {
        continue;
      }
      int tab = line.indexOf('\t');
      if (tab < 0) {
        throw new UsageError(messages + ":" + lineNo + ": expected EventType<TAB>base64");
      }
      String type = line.substring(0, tab);
      BinaryMessageDecoder<GenericRecord> decoder = decoders.get(type);
      if (decoder == null) {
        throw new UsageError(messages + ":" + lineNo + ": no current schema for event type " + type);
      }
      byte[] data = Base64.getDecoder().decode(line.substring(tab + 1).strip());
      try (JsonGenerator out = json.createGenerator((OutputStream) OUT, JsonEncoding.UTF8)) {
        out.writeStartObject();
        out.writeStringField("type", type);
        try {
          Schema legacyWriter = data.length >= 10
              ? byLegacy.get(ByteBuffer.wrap(data, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong()) : null;
          GenericRecord record = legacyWriter == null ? decoder.decode(data)
              : new RawMessageDecoder<GenericRecord>(GenericData.get(), legacyWriter, current.get(type))
                  .decode(ByteBuffer.wrap(data, 10, data.length - 10));
          // Checked before anything is written, so a bad value gives an error line, not half a record.
          checkLogicalTypes(record.getSchema(), record, type);
          out.writeFieldName("record");
          writeJson(out, record.getSchema(), record);
        } catch (IOException | AvroRuntimeException | IllegalArgumentException error) {
          failed++;
          out.writeStringField("error", error.getClass().getName());
          out.writeStringField("message", String.valueOf(error.getMessage()));
        }
        out.writeEndObject();
      }
      OUT.println();
    }
    return failed == 0 ? 0 : 3;
  }

  /** Every uuid and timestamp-micros value goes through Avro's own conversion; throws if one refuses. */
  static void checkLogicalTypes(Schema schema, Object datum, String where) {
    LogicalType logical = schema.getLogicalType();
    if (logical != null && datum != null) {
      switch (logical.getName()) {
        case "uuid" -> {
          UUID uuid = UUID.fromString(datum.toString());
          if (!uuid.toString().equals(datum.toString())) {
            throw new IllegalArgumentException(where + ": uuid " + datum + " is not in canonical form");
          }
        }
        case "timestamp-micros" -> new TimeConversions.TimestampMicrosConversion()
            .fromLong((Long) datum, schema, logical);
        default -> { }
      }
    }
    switch (schema.getType()) {
      case RECORD -> {
        GenericRecord record = (GenericRecord) datum;
        for (Schema.Field field : schema.getFields()) {
          checkLogicalTypes(field.schema(), record.get(field.pos()), where + "." + field.name());
        }
      }
      case UNION -> checkLogicalTypes(
          schema.getTypes().get(GenericData.get().resolveUnion(schema, datum)), datum, where);
      case ARRAY -> {
        for (Object item : (List<?>) datum) {
          checkLogicalTypes(schema.getElementType(), item, where + "[]");
        }
      }
      case MAP -> {
        for (Object value : ((Map<?, ?>) datum).values()) {
          checkLogicalTypes(schema.getValueType(), value, where + "{}");
        }
      }
      default -> { }
    }
  }

  /** A generic datum as JSON: records as objects, bytes and fixed as base64, unions as their value. */
  static void writeJson(JsonGenerator out, Schema schema, Object datum) throws IOException {
    switch (schema.getType()) {
      case RECORD -> {
        GenericRecord record = (GenericRecord) datum;
        out.writeStartObject();
        for (Schema.Field field : schema.getFields()) {
          out.writeFieldName(field.name());
          writeJson(out, field.schema(), record.get(field.pos()));
        }
        out.writeEndObject();
      }
      case UNION -> {
        int index = GenericData.get().resolveUnion(schema, datum);
        Schema branch = schema.getTypes().get(index);
        long nonNull = schema.getTypes().stream().filter(s -> s.getType() != Schema.Type.NULL).count();
        if (nonNull > 1 && branch.getType() != Schema.Type.NULL) {
          // Several branches: say which one, as Avro's JSON encoding does.
          out.writeStartObject();
          out.writeFieldName(branch.getFullName());
          writeJson(out, branch, datum);
          out.writeEndObject();
        } else {
          writeJson(out, branch, datum);
        }
      }
      case ARRAY -> {
        out.writeStartArray();
        for (Object item : (List<?>) datum) {
          writeJson(out, schema.getElementType(), item);
        }
        out.writeEndArray();
      }
      case MAP -> {
        out.writeStartObject();
        for (Map.Entry<?, ?> entry : new TreeMap<>(stringKeys((Map<?, ?>) datum)).entrySet()) {
          out.writeFieldName(entry.getKey().toString());
          writeJson(out, schema.getValueType(), entry.getValue());
        }
        out.writeEndObject();
      }
      case STRING -> out.writeString(datum.toString());
      case ENUM -> out.writeString(((GenericEnumSymbol<?>) datum).toString());
      case BYTES -> {
        ByteBuffer buffer = ((ByteBuffer) datum).duplicate();
        byte[] bytes = new byte[buffer.remaining()];
        buffer.get(bytes);
        out.writeString(Base64.getEncoder().encodeToString(bytes));
      }
      case FIXED -> out.writeString(Base64.getEncoder().encodeToString(((GenericFixed) datum).bytes()));
      case INT -> out.writeNumber((Integer) datum);
      case LONG -> out.writeNumber((Long) datum);
      case FLOAT -> out.writeNumber((Float) datum);
      case DOUBLE -> out.writeNumber((Double) datum);
      case BOOLEAN -> out.writeBoolean((Boolean) datum);
      case NULL -> out.writeNull();
      default -> throw new IllegalArgumentException("unexpected schema type " + schema.getType());
    }
  }

  static Map<String, Object> stringKeys(Map<?, ?> map) {
    Map<String, Object> out = new LinkedHashMap<>();
    map.forEach((k, v) -> out.put(k.toString(), v));
    return out;
  }

  // -- encode-intake --------------------------------------------------------------------------

  static int encodeIntake(Path schemaFile, Path jsonFile) throws IOException, UsageError {
    Schema schema = new Schema.Parser().parse(schemaFile.toFile());
    JsonNode json = new ObjectMapper().readTree(jsonFile.toFile());
    Object record = fromJson(schema, json, "$");
    if (!GenericData.get().validate(schema, record)) {
      throw new UsageError(jsonFile + " does not make a valid " + schema.getFullName());
    }
    @SuppressWarnings("unchecked")
    ByteBuffer bytes = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode((GenericRecord) record);
    byte[] out = new byte[bytes.remaining()];
    bytes.get(out);
    OUT.println(Base64.getEncoder().encodeToString(out));
    return 0;
  }

  /** The generic datum of *schema* for a JSON value, the way an adapter would build it. */
  static Object fromJson(Schema schema, JsonNode node, String where) throws UsageError {
    LogicalType logical = schema.getLogicalType();
    switch (schema.getType()) {
      case RECORD -> {
        if (!node.isObject()) {
          throw new UsageError(where + ": expected an object for " + schema.getFullName());
        }
        GenericRecordBuilder builder = new GenericRecordBuilder(schema);
        for (Map.Entry<String, JsonNode> entry : node.properties()) {
          Schema.Field field = schema.getField(entry.getKey());
          if (field == null) {
            throw new UsageError(where + ": " + schema.getFullName() + " has no field " + entry.getKey());
          }
          builder.set(field, fromJson(field.schema(), entry.getValue(), where + "." + field.name()));
        }
        try {
          return builder.build(); // fields left out take their schema default
        } catch (AvroRuntimeException error) {
          throw new UsageError(where + ": " + error.getMessage());
        }
      }
      case UNION -> {
        List<Schema> branches = schema.getTypes();
        if (node.isNull()) {
          for (Schema branch : branches) {
            if (branch.getType() == Schema.Type.NULL) {
              return null;
            }
          }
          throw new UsageError(where + ": null is not allowed by " + schema);
        }
        if (node.isObject() && node.size() == 1) {
          String key = node.properties().iterator().next().getKey();
          for (Schema branch : branches) {
            if (key.equals(branch.getFullName()) || key.equals(branch.getName())) {
              return fromJson(branch, node.get(key), where + "<" + key + ">");
            }
          }
        }
        List<String> refused = new ArrayList<>();
        for (Schema branch : branches) {
          if (branch.getType() == Schema.Type.NULL) {
            continue;
          }
          try {
            return fromJson(branch, node, where);
          } catch (UsageError error) {
            refused.add(error.getMessage());
          }
        }
        throw new UsageError(where + ": fits no branch of the union: " + refused);
      }
      case ARRAY -> {
        if (!node.isArray()) {
          throw new UsageError(where + ": expected an array");
        }
        List<Object> items = new GenericData.Array<>(node.size(), schema);
        int i = 0;
        for (JsonNode item : node) {
          items.add(fromJson(schema.getElementType(), item, where + "[" + i++ + "]"));
        }
        return items;
      }
      case MAP -> {
        if (!node.isObject()) {
          throw new UsageError(where + ": expected an object (a map)");
        }
        Map<String, Object> map = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> entry : node.properties()) {
          map.put(entry.getKey(), fromJson(schema.getValueType(), entry.getValue(), where + "." + entry.getKey()));
        }
        return map;
      }
      case STRING -> {
        if (!node.isTextual()) {
          throw new UsageError(where + ": expected a string");
        }
        if (logical != null && logical.getName().equals("uuid")) {
          UUID.fromString(node.asText());
        }
        return node.asText();
      }
      case LONG -> {
        if (logical != null && logical.getName().equals("timestamp-micros") && node.isTextual()) {
          Instant instant = Instant.parse(node.asText());
          return ChronoUnit.MICROS.between(Instant.EPOCH, instant);
        }
        if (!node.isIntegralNumber()) {
          throw new UsageError(where + ": expected an integer");
        }
        return node.asLong();
      }
      case INT -> {
        if (!node.isIntegralNumber()) {
          throw new UsageError(where + ": expected an integer");
        }
        return node.asInt();
      }
      case BOOLEAN -> {
        if (!node.isBoolean()) {
          throw new UsageError(where + ": expected true or false");
        }
        return node.asBoolean();
      }
      case DOUBLE -> {
        return node.asDouble();
      }
      case FLOAT -> {
        return (float) node.asDouble();
      }
      case BYTES -> {
        if (!node.isTextual()) {
          throw new UsageError(where + ": expected base64 text");
        }
        return ByteBuffer.wrap(Base64.getDecoder().decode(node.asText()));
      }
      case ENUM -> {
        if (!node.isTextual() || !schema.hasEnumSymbol(node.asText())) {
          throw new UsageError(where + ": expected a symbol of " + schema.getFullName());
        }
        return new GenericData.EnumSymbol(schema, node.asText());
      }
      case FIXED -> {
        return new GenericData.Fixed(schema, Base64.getDecoder().decode(node.asText()));
      }
      case NULL -> {
        if (!node.isNull()) {
          throw new UsageError(where + ": expected null");
        }
        return null;
      }
      default -> throw new UsageError(where + ": unsupported schema type " + schema.getType());
    }
  }

  // -- compat ---------------------------------------------------------------------------------

  static int compat(Path schemaDir) throws IOException, UsageError {
    Map<String, Schema> current = currentSchemas(schemaDir);
    int incompatible = 0;
    for (Map.Entry<String, Schema> entry : retiredSchemas(schemaDir).entrySet()) {
      String type = typeName(Path.of(entry.getKey()));
      Schema reader = current.get(type);
      if (reader == null) {
        OUT.println(type + "\t" + entry.getKey() + "\tINCOMPATIBLE\tno current schema for " + type);
        incompatible++;
        continue;
      }
      SchemaCompatibility.SchemaPairCompatibility result =
          SchemaCompatibility.checkReaderWriterCompatibility(reader, entry.getValue());
      boolean ok = result.getType() == SchemaCompatibility.SchemaCompatibilityType.COMPATIBLE;
      if (!ok) {
        incompatible++;
      }
      String description = ok ? "" : result.getResult().getIncompatibilities().toString();
      OUT.println(type + "\t" + entry.getKey() + "\t" + (ok ? "COMPATIBLE" : "INCOMPATIBLE") + "\t"
          + description.replace('\n', ' ').replace('\t', ' '));
    }
    return incompatible == 0 ? 0 : 1;
  }
}
