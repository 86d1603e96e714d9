"""Writes docs/openapi.json (Sources/GraftServer/openapi.json, which the server embeds and serves).

Edit the routes and schemas here, then run `python3 scripts/openapi_gen.py`; RouteTests holds the
document's operations equal to the routes the server registers.
"""
import os
import json
name={"name":"name","in":"path","required":True,"schema":{"type":"string","pattern":"^([A-Za-z0-9_][A-Za-z0-9._-]{0,127}/)?[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"},"description":"A model name, optionally under one namespace (ORG/NAME, the `/` percent-encoded as %2F in the path)."}
ref={"name":"ref","in":"path","required":True,"schema":{"type":"string","maxLength":200},"description":"A checkpoint reference: NAME@N, NAME@latest, NAME@ALIAS, NAME (its newest), or sha256:HEX (12 to 64 digits)."}
digest={"name":"digest","in":"path","required":True,"schema":{"type":"string","pattern":"^sha256:[0-9a-f]{64}$"}}
alias={"name":"alias","in":"path","required":True,"schema":{"type":"string","maxLength":128}}
advid={"name":"id","in":"path","required":True,"schema":{"type":"string","maxLength":128}}
def q(n,desc,typ="string",enum=None,required=False):
    s={"type":typ}
    if enum: s["enum"]=enum
    return {"name":n,"in":"query","required":required,"schema":s,"description":desc}
def body(schema,required=True,ctype="application/json"):
    return {"required":required,"content":{ctype:{"schema":{"$ref":"#/components/schemas/"+schema} if isinstance(schema,str) else schema}}}
def resp(code,desc,schema=None,ctype="application/json"):
    r={"description":desc}
    if schema is not None:
        r["content"]={ctype:{"schema":{"$ref":"#/components/schemas/"+schema} if isinstance(schema,str) else schema}}
    return r
errors={"400":{"$ref":"#/components/responses/BadRequest"},"401":{"$ref":"#/components/responses/Unauthorized"},"403":{"$ref":"#/components/responses/Forbidden"},"404":{"$ref":"#/components/responses/NotFound"}}
page=[q("limit","At most this many items (1 to 1000); the rest by `cursor`. Absent: the whole list.","integer"),q("cursor","The `X-Next-Cursor` of the page before (with `limit`).")]
def op(summary,scope,params=[],requestBody=None,ok=("200","OK",None),extra={}):
    o={"summary":summary,"description":f"Scope: `{scope}`.","parameters":params,"responses":{ok[0]:resp(*ok[1:]) if len(ok)>2 else resp(ok[0],ok[1])}}
    o["responses"][ok[0]]=resp(ok[1],ok[2]) if False else ({"description":ok[1]} | ({"content":{"application/json":{"schema":{"$ref":"#/components/schemas/"+ok[2]} if isinstance(ok[2],str) else ok[2]}}} if ok[2] is not None else {}))
    o["responses"].update(errors); o["responses"].update(extra)
    if requestBody: o["requestBody"]=requestBody
    if not params: del o["parameters"]
    return o
obj={"type":"object"}
arr={"type":"array","items":{"type":"object"}}
conflict={"409":{"$ref":"#/components/responses/Conflict"}}
toolarge={"413":{"$ref":"#/components/responses/TooLarge"}}
paths={
"/healthz":{"get":{"summary":"Liveness: answers 200 without a token.","security":[],"responses":{"200":{"description":"The server is up.","content":{"application/json":{"schema":{"type":"object","properties":{"status":{"type":"string"},"version":{"type":"string"}},"required":["status","version"]}}}}}}},
"/v1/openapi.json":{"get":op("This document.","read",ok=("200","The OpenAPI 3.1 document.",obj))},
"/v1/models":{"get":op("Every model the token sees, by name (`graft list`); paged with `limit` and `cursor` (`X-Next-Cursor`, `Link: rel=next`).","read",page,ok=("200","Models.",{"type":"array","items":{"$ref":"#/components/schemas/ModelSummary"}}))},
"/v1/models/{name}":{"get":op("A model with its checkpoints, manifest and newest checkpoint's tensors (`graft show NAME`).","read",[name],ok=("200","The model.",obj)),
  "delete":op("Removes a model (`graft model remove`); with cascade, its descendants too.","admin",[name,q("cascade","Also remove every descendant.","boolean"),q("dry_run","Report without removing.","boolean")],ok=("200","What was (or would be) removed.",obj),extra=conflict)},
"/v1/models/{name}/checkpoints":{"get":op("A model's checkpoints, oldest first (`graft checkpoint list`); paged with `limit` and `cursor`.","read",[name]+page,ok=("200","Checkpoints.",arr)),
  "post":op("Commits uploaded tensors as the model's next checkpoint; every blob must be present and every tensor under `inline_below` carry `data`.","write",[name],body("UploadCommit"),ok=("201","The checkpoint committed.","ImportResult"),extra=conflict|toolarge)},
"/v1/models/{name}/checkpoints/proposal":{"post":op("Proposes the model's next checkpoint: enforces a student's manifest from the header and digests (409 naming every tensor) and answers which blobs to send.","write",[name],body("UploadProposal"),ok=("200","The blobs to send.","UploadPlan"),extra=conflict|toolarge)},
"/v1/bases/{name}/proposal":{"post":op("Proposes a new base: answers which blobs to send.","write",[name],body("UploadProposal"),ok=("200","The blobs to send.","UploadPlan"),extra=conflict|toolarge)},
"/v1/bases/{name}":{"post":op("Registers uploaded tensors as a new base (`graft base add`), with its provenance.","write",[name],body("UploadCommit"),ok=("201","The base registered.","ImportResult"),extra=conflict|toolarge)},
"/v1/models/{name}/card":{"get":{"summary":"The model card, Markdown with YAML front matter (`graft card`).","description":"Scope: `read`.","parameters":[name],"responses":{"200":{"description":"The card.","content":{"text/markdown":{"schema":{"type":"string"}}}}}|errors}},
"/v1/models/{name}/lineage":{"get":{"summary":"Ancestry to the root base and every descendant (`graft lineage`); the descendants paged with `limit` and `cursor`.","description":"Scope: `read`. A confined token sees only the models it matches.","parameters":[name,q("format","json, dot, mermaid or tree.","string",["json","dot","mermaid","tree"]),q("metric","Each model's best value of this metric."),q("direction","max or min.","string",["max","min"]),q("parts","both, ancestors or descendants.","string",["both","ancestors","descendants"])]+page,
  "responses":{"200":{"description":"The lineage.","content":{"application/json":{"schema":obj},"text/plain":{"schema":{"type":"string"}},"text/vnd.graphviz":{"schema":{"type":"string"}}}}}|errors}},
"/v1/models/{name}/curves":{"post":op("Logs one step of training curves (`graft metric curve`).","write",[name],body("CurveRequest"),ok=("204","Logged.",None))},
"/v1/models/{name}/curves/import":{"post":op("Imports curves from CSV or JSON lines (`graft metric import`).","write",[name],{"required":True,"content":{"text/csv":{"schema":{"type":"string"}},"application/x-ndjson":{"schema":{"type":"string"}}}},ok=("200","What was imported.",obj),extra=toolarge)},
"/v1/models/{name}/aliases/{alias}":{"delete":op("Removes an alias (`graft untag`).","write",[name,alias],ok=("204","Removed.",None))},
"/v1/models/{name}/prune":{"post":op("Removes old checkpoints by a retention policy (`graft prune`).","admin",[name],body("PruneRequest"),ok=("200","What was (or would be) removed.",obj),extra=conflict)},
"/v1/students":{"post":op("Creates a student of a parent checkpoint with its frozen-layer manifest (`graft student create`).","write",[],body("StudentRequest"),ok=("201","The student and its resolved manifest.",obj),extra=conflict)},
"/v1/checkpoints/{ref}":{"get":op("A checkpoint with its tensors by layer (`graft show NAME@N`).","read",[ref],ok=("200","The checkpoint.",obj)),
  "delete":op("Removes a checkpoint (`graft checkpoint remove`).","admin",[ref,q("dry_run","Report without removing.","boolean")],ok=("200","What was (or would be) removed.",obj),extra=conflict)},
"/v1/checkpoints/{ref}/metrics":{"get":op("A checkpoint's (or model's) metrics and curves (`graft metrics`).","read",[ref],ok=("200","Metrics.",obj)),
  "post":op("Logs evaluation metrics on a checkpoint (`graft metric log`).","write",[ref],body("MetricsRequest"),ok=("200","The checkpoint logged on.",obj))},
"/v1/checkpoints/{ref}/file":{"get":{"summary":"One file of a checkpoint kept as a model directory (a shard or another file), byte-identical to what export writes at that path, verified as it streams.","description":"Scope: `read`. `show` (GET /v1/checkpoints/{ref}) lists the files with their lengths and digests; 404 for a path the checkpoint lacks.","parameters":[ref,q("path","The file's relative POSIX path, e.g. 1_Pooling/config.json.",required=True)],
  "responses":{"200":{"description":"The file.","content":{"application/octet-stream":{"schema":{"type":"string","contentMediaType":"application/octet-stream"}}}}}|errors}},
"/v1/checkpoints/{ref}/safetensors":{"get":{"summary":"The checkpoint's byte-exact safetensors file, verified as it streams.","description":"Scope: `read`. ETag is the checkpoint digest; one byte range (`Range: bytes=A-B`) answers 206.","parameters":[ref,{"name":"Range","in":"header","required":False,"schema":{"type":"string"}}],
  "responses":{"200":{"description":"The file.","content":{"application/octet-stream":{"schema":{"type":"string","contentMediaType":"application/octet-stream"}}}},"206":{"description":"The range asked for.","content":{"application/octet-stream":{"schema":{"type":"string","contentMediaType":"application/octet-stream"}}}},"304":{"description":"Not modified (If-None-Match)."}}|errors},
  "head":{"summary":"What GET would answer, without the body: Content-Length, ETag (the checkpoint digest), Accept-Ranges.","description":"Scope: `read`.","parameters":[ref],"responses":{"200":{"description":"The file's headers."}}|errors}},
"/v1/checkpoints/{ref}/affected":{"get":op("Descendants that inherit the model's (or checkpoint's) open advisories (`graft affected`), each with the checkpoint it derives from (`parent`) and how much of the flagged checkpoint its newest checkpoint holds (`exposure`, `frozen_depth`, `drift`, `layers`; docs/JSON.md); whole paths only with `paths=true`; paged with `limit` and `cursor`.","read",[ref,q("paths","Each descendant's whole path from the flagged model (else empty).","boolean"),q("exposure","`digests` (the default: metadata only, drift where cached), `drift` (reads each changed tensor pair once, then cached) or `none`.",enum=["none","digests","drift"])]+page,ok=("200","Affected models.",arr))},
"/v1/checkpoints/{ref}/exposure":{"get":op("How much of the ancestor checkpoint `to` this checkpoint still carries (`graft exposure REF --to A`): the share of its bytes held by digest, the frozen depth, and relative L2 drift per layer.","read",[ref,q("to","The ancestor: a checkpoint reference (NAME is its newest).",required=True),q("detail","`drift` (the default) or `digests` (no tensor data read).",enum=["digests","drift"])],ok=("200","The exposure.","Exposure"))},
"/v1/checkpoints/{ref}/signature":{"get":op("The checkpoint's OpenSSF model signature (`model.sig`, a Sigstore bundle), base64 in `bundle`; `bundle` is null when it has none.","read",[ref],ok=("200","The signature.","SignatureBundle")),
  "put":op("Records a signature made by the client (`graft sign` against a server: the private key stays with the client) once it verifies with `public_key` against the checkpoint's files; replaces any it had.","write",[ref],body("SignatureBundle"),ok=("200","The signature recorded.",obj),extra={"422":{"description":"The signature does not verify (error `signature`; `details` names each file)."}})},
"/v1/checkpoints/{ref}/signed-files":{"get":op("The files the checkpoint exports to, each with its SHA-256 (a plain file's is its blob's; each safetensors file is hashed from its blobs): what a signature lists.","read",[ref],ok=("200","The files.","SignedFiles"))},
"/v1/checkpoints/{ref}/aliases/{alias}":{"put":op("Points an alias at a checkpoint (`graft tag`).","write",[ref,alias],ok=("200","The alias set.",obj))},
"/v1/diff":{"get":op("Per-tensor and per-layer differences of two checkpoints (`graft diff`).","read",[q("from","A checkpoint reference.",required=True),q("to","A checkpoint reference.",required=True)],ok=("200","The diff.",obj))},
"/v1/best":{"get":op("The best checkpoint by a metric: of one model, under a base (any depth), or overall (`graft best`).","read",[q("metric","The metric to rank by.",required=True),q("model","Only this model."),q("under","This model and every descendant."),q("split","Only this split."),q("direction","max or min; else from the metric's name.","string",["max","min"]),q("include_flagged","Consider checkpoints with an open advisory.","boolean")],ok=("200","The best checkpoint.",obj))},
"/v1/advisories":{"get":op("Advisories (`graft advisory list`); paged with `limit` and `cursor`.","read",[q("all","Include resolved ones.","boolean")]+page,ok=("200","Advisories.",arr)),
  "post":op("Flags a model or checkpoint (`graft advisory add`); its descendants inherit it.","admin",[],body("AdvisoryRequest"),ok=("201","The advisory.",obj),extra=conflict)},
"/v1/advisories/{id}/resolve":{"post":op("Resolves an advisory (`graft advisory resolve`).","admin",[advid],ok=("204","Resolved.",None))},
"/v1/stats":{"get":op("Registry totals: logical and stored bytes, dedup ratio (`graft stats`).","read (every model)",ok=("200","Totals.",obj))},
"/v1/verify":{"post":op("Checks the registry (`graft verify`).","admin (every model)",[q("read_data","Rehash every blob.","boolean")],ok=("200","The report.",obj))},
"/v1/copy/graph":{"get":op("Every model with the students' manifests: what orders a copy (`graft copy --registry URL`).","read (every model)",ok=("200","Models and manifests.",arr))},
"/v1/copy/models/{name}":{"get":op("A model's whole history for `graft copy`: checkpoints, metrics, curves, aliases, advisories, manifest; with `numbers`, the contents of those checkpoints (header, tensors, files, signature).","read (every model)",[name,q("numbers","Comma-separated checkpoint numbers (at most 64) whose contents to include.")],ok=("200","The history.",obj))},
"/v1/copy/blobs":{"post":op("Of these blobs (digest, length), the ones the registry lacks, announced for `PUT /v1/blobs/{digest}` (not with `dry_run`).","admin (every model)",[q("dry_run","Only answer; announce nothing.","boolean")],body(arr),ok=("200","The missing blobs.",arr))},
"/v1/copy":{"post":op("Copies models with their history into the registry (`graft copy --to URL`): checked and committed as a local copy is; another history under a name is refused per model. Blobs first (`/v1/copy/blobs`).","admin (every model)",[],body(obj),ok=("200","What was (or, with `dry_run`, would be) copied.",obj),extra=conflict|toolarge)},
"/v1/gc":{"post":op("Removes blobs no checkpoint refers to, older than the grace period (`graft gc`).","admin (every model)",[],body("GCRequest",required=False),ok=("200","What was (or would be) removed.",obj))},
"/v1/blobs/{digest}":{"get":{"summary":"One stored blob's bytes, verified as they stream.","description":"Scope: `read`; a confined token gets only blobs its models refer to.","parameters":[digest],"responses":{"200":{"description":"The blob.","content":{"application/octet-stream":{"schema":{"type":"string","contentMediaType":"application/octet-stream"}}}}}|errors},
  "put":{"summary":"Uploads one blob a proposal asked for; streamed to temporary storage and rehashed, kept only when its bytes number and hash as announced.","description":"Scope: `write`. The length is the proposal's; Content-Length must match it.","parameters":[digest],"requestBody":{"required":True,"content":{"application/octet-stream":{"schema":{"type":"string","contentMediaType":"application/octet-stream"}}}},
   "responses":{"201":{"description":"Stored (the same answer whether or not the registry held it).","content":{"application/json":{"schema":{"$ref":"#/components/schemas/BlobReceipt"}}}}}|errors}},
}
S=lambda props,req=[]: {"type":"object","properties":props,"required":req}
strs={"type":"array","items":{"type":"string"}}
metrics={"type":"object","additionalProperties":{"type":"number"}}
schemas={
"Error":S({"error":{"type":"string","enum":["usage","invalid_input","not_found","exists","busy","not_a_registry","incompatible","read_only","disk_full","io","damage","manifest_violation","protected","conflict","unauthorized","forbidden","too_large","signature","unavailable","internal"]},"message":{"type":"string"},"details":strs,"violations":{"type":"array","description":"A manifest violation's offending tensors, typed.","items":S({"tensor":{"type":"string"},"rule":{"type":"string","enum":["changed","retyped","missing","dropped_present","adapter"]},"expected":{"type":"string","description":"The parent's digest (changed), the recorded type (retyped), the manifest state (missing), what an adapter's tensor or config should be (adapter)."},"found":{"type":"string","description":"The proposed digest (changed), type (retyped) or what an adapter's tensor or config is (adapter)."}},["tensor","rule"])}},["error","message"]),
"ModelSummary":{"type":"object"},
"ProposedTensor":S({"name":{"type":"string"},"digest":{"type":"string","pattern":"^sha256:[0-9a-f]{64}$"},"length":{"type":"integer","minimum":0},"data":{"type":"string","description":"base64 bytes, for tensors under inline_below"}},["name","digest","length"]),
"UploadProposal":S({"header":{"type":"string","description":"The safetensors header as the file begins (8-byte length + JSON), base64."},"tensors":{"type":"array","items":{"$ref":"#/components/schemas/ProposedTensor"}}},["header","tensors"]),
"UploadPlan":S({"missing":{"type":"array","items":{"$ref":"#/components/schemas/ProposedTensor"}},"inline_below":{"type":"integer"},"bytes_missing":{"type":"integer"},"logical_bytes":{"type":"integer"}},["missing","inline_below","bytes_missing","logical_bytes"]),
"Provenance":S({**{k:{"type":"string"} for k in ["source","license","dataset","architecture","task","description"]},"metadata":{"type":"object","additionalProperties":{"type":"string"}}}),
"UploadCommit":S({"proposal":{"$ref":"#/components/schemas/UploadProposal"},"step":{"type":"integer"},"epoch":{"type":"integer"},"metrics":metrics,"split":{"type":"string"},"provenance":{"$ref":"#/components/schemas/Provenance"},"idempotency_key":{"type":"string","maxLength":128},"signature":{"type":"string","description":"A model directory's model.sig, base64: kept with the checkpoint; verified against the uploaded files with `public_key` and with a key the server requires (`graft serve --require-signed-bases`), else refused (422, error `signature`)."},"public_key":{"type":"string","description":"PEM public key the signature must verify with."}},["proposal"]),
"SignatureBundle":S({"bundle":{"type":["string","null"],"description":"model.sig's bytes, base64."},"public_key":{"type":"string","description":"PEM public key (PUT only)."},"checkpoint":{"type":"string","description":"NAME@N, the checkpoint resolved (GET only)."}},[]),
"SignedFiles":S({"checkpoint":{"type":"string"},"files":{"type":"array","items":S({"name":{"type":"string","description":"Relative POSIX path; `.` for a checkpoint that is one file."},"digest":{"type":"string"}},["name","digest"])}},["checkpoint","files"]),
"Exposure":S({"checkpoint":{"type":"string","description":"The descendant checkpoint measured."},"ancestor":{"type":"string"},"exposure":{"type":"number","minimum":0,"maximum":1,"description":"Bytes of the ancestor's tensors held under the same name with the same digest, over all its tensor bytes. 0 is not safety."},"held_bytes":{"type":"integer"},"ancestor_bytes":{"type":"integer"},"frozen_depth":{"type":"integer","description":"Leading layers held whole."},"drift":{"type":"number","description":"‖D − A‖ / ‖A‖ over comparable tensors; absent when not measured."},"layers":{"type":"array","items":{"type":"object","properties":{"name":{"type":"string"},"identical":{"type":"boolean"},"drift":{"type":"number"},"bytes":{"type":"integer"},"adapted":{"type":"boolean"}},"required":["name","identical","bytes"]}}},["checkpoint","ancestor","exposure","held_bytes","ancestor_bytes","frozen_depth","layers"]),
"ImportResult":S({"model":{"type":"string"},"checkpoint":{"type":"string"},"digest":{"type":"string"},"tensors":{"type":"integer"},"parameters":{"type":"integer"},"logical_bytes":{"type":"integer"},"bytes_stored":{"type":"integer"},"bytes_already_present":{"type":"integer"},"new_tensors":strs,"files":{"type":"integer","description":"For a model directory: its files (shards and the rest)."}},["model","checkpoint","digest"]),
"BlobReceipt":S({"digest":{"type":"string"},"length":{"type":"integer"}},["digest","length"]),
"StudentRequest":S({"name":{"type":"string"},"parent":{"type":"string"},"relation":{"type":"string","enum":["finetune","adapter","distillation","merge","quantized"]},"freeze":strs,"train":strs,"drop":strs,"reinit":strs,"freeze_through":{"type":"string"},"prefix":{"type":"string","description":"The student names the parent's tensors under this prefix (`bert.`); inferred from the rules when absent."},"per_tensor":{"type":"object","additionalProperties":{"type":"string","enum":["frozen","trainable","new","dropped"]}},"adapter":{"type":"boolean","description":"An adapter student (transfer mode `adapter`): every parent tensor frozen and never stored; checkpoints are PEFT adapter directories. Excludes every rule field."},"description":{"type":"string"}},["name","parent"]),
"MetricsRequest":S({"metrics":metrics,"split":{"type":"string"}},["metrics"]),
"CurveRequest":S({"step":{"type":"integer"},"metrics":metrics},["step","metrics"]),
"AdvisoryRequest":S({"on":{"type":"string"},"id":{"type":"string"},"severity":{"type":"string","enum":["low","medium","high","critical"]},"note":{"type":"string"},"url":{"type":"string"}},["on","id","severity"]),
"PruneRequest":S({"keep_last":{"type":"integer","minimum":0},"keep_best":{"type":"integer","minimum":0},"metric":{"type":"string"},"direction":{"type":"string","enum":["max","min"]},"split":{"type":"string"},"dry_run":{"type":"boolean"}},["keep_last"]),
"GCRequest":S({"grace":{"type":"number","minimum":0},"dry_run":{"type":"boolean"}}),
}
def er(d): return {"description":d,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/Error"}}}}
doc={"openapi":"3.1.0","info":{"title":"Graft registry API","version":"1","description":"The HTTP API of `graft serve`. Every route but /healthz needs `Authorization: Bearer TOKEN` (`graft token create`). Bodies and answers use the JSON contract of the CLI's --json (docs/JSON.md): snake_case keys. Errors answer `{\"error\": KIND, \"message\": ..., \"details\": [...]}`. The upload protocol (docs/ARCHITECTURE.md): propose, PUT the missing blobs, commit."},
"servers":[{"url":"http://127.0.0.1:8470"}],
"security":[{"bearer":[]}],
"paths":paths,
"components":{"securitySchemes":{"bearer":{"type":"http","scheme":"bearer"}},"schemas":schemas,
 "responses":{"BadRequest":er("Malformed input: a bad name, reference, parameter or JSON; nothing was changed."),"Unauthorized":er("No token, or a malformed, unknown or revoked one."),"Forbidden":er("The token's scope does not allow this."),"NotFound":er("No such model, checkpoint or blob (or one the token may not see)."),"Conflict":er("A manifest violation (details name every tensor), a taken name, a protected removal, or blobs missing at commit; nothing was changed."),"TooLarge":er("The body is over this route's limit.")}}}
for p in doc["paths"].values():
    for o in p.values():
        o["responses"].setdefault("503", {"description":"Busy: the registry's write lock is held; retry.","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Error"}}}}) if "security" not in o else None
open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),"Sources/GraftServer/openapi.json"),"w").write(json.dumps(doc,indent=2)+"\n")
