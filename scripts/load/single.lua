-- wrk load script: one structured-mode CloudEvent per POST (see README, "Sink server load test").
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/cloudevents+json"
wrk.body = [=[{"specversion":"1.0","id":"evt-000001","source":"https://github.com/cloudevents/spec/pull/123","type":"com.github.pull.create","time":"2019-07-04T17:31:00.000Z","datacontenttype":"application/json","data":{"much":"wow","n":1}}]=]
