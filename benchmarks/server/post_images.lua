-- wrk script: POST the images listed in $AFA_BENCH_IMAGES (colon-separated JPEG paths) in turn
-- to /v1/segment; counts non-2xx answers.
local requests = {}
local index = 0

function init(args)
  local list = os.getenv("AFA_BENCH_IMAGES")
  for path in string.gmatch(list, "[^:]+") do
    local f = assert(io.open(path, "rb"))
    local body = f:read("*a")
    f:close()
    table.insert(requests, wrk.format("POST", "/v1/segment", {["Content-Type"] = "image/jpeg"}, body))
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end
